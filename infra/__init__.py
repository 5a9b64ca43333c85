"""Bringing the kernel up: the embedded development stack."""
