"""Workflow code: deterministic, no I/O; every request to the kernel is an activity."""
