"""Example agents shipped with kernos."""
