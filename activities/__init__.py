"""The syscall boundary: activities that decide, audit, and call the kernel's managers."""
