"""The kernel: managers behind the syscall interface, plain asyncio Python."""
