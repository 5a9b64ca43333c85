"""The seccomp filter of a confined child: the kernel's riskier doors, shut.

Namespaces, `nobody`, no capabilities and no new privileges already keep a child from what it
must not reach; the filter narrows the Linux kernel it can talk to, the way container runtimes
and Flatpak do, so that a bug in a rarely used corner of it is not agent code's way out. It
refuses (`EPERM`) what workflow code has no use for:
- making namespaces or mounts of its own (`unshare`, `setns`, `clone` with a namespace flag,
  `mount` and the new mount API, `pivot_root`, `chroot`); `clone3`, whose flags seccomp cannot
  read, answers `ENOSYS`, so that the C library falls back to `clone`;
- reaching into other processes (`ptrace`, `process_vm_readv`/`writev`, `kcmp`, `pidfd_getfd`);
- the kernel's own machinery (modules, `kexec`, `bpf`, `perf_event_open`, `userfaultfd`,
  `io_uring`, the keyring, file handles, clocks, swap, reboot, `personality`);
- sockets of any family but Unix, IPv4 and IPv6 (netlink, packet, vsock, `AF_ALG`, ...);
- with `single_process` (a host without cgroups, whose process counts are per user, shared
  by every pool), any new process: `fork`, `vfork`, and `clone` without `CLONE_THREAD`;
  threads stay allowed, bounded by the process's address space (`pool_limits.rlimits`).
A syscall of another architecture (32-bit calls on a 64-bit kernel) kills the process. Being a
list of what is refused, it cannot refuse syscalls newer than it (or than libseccomp, which
skips names it does not know); the namespaces and the unprivileged user stay the boundary.

The filter is compiled with the system's libseccomp (Debian's `libseccomp2`, on every Debian
system), through ctypes, and handed to bubblewrap, which installs it just before it starts
the child.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager

#: libseccomp's actions, filter attribute and comparisons (from seccomp.h).
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_KILL_PROCESS = 0x80000000
_ATTR_ACT_BADARCH = 2
_CMP_EQ = 4
_CMP_GT = 6
_CMP_MASKED_EQ = 7

#: Refused with EPERM.
DENIED = (
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
    "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    # other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "process_madvise",
    # the kernel's machinery
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "add_key", "request_key", "keyctl", "open_by_handle_at",
    "name_to_handle_at", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie",
    "iopl", "ioperm", "sethostname", "setdomainname", "vhangup", "uselib", "personality",
    "move_pages", "migrate_pages", "mbind", "set_mempolicy", "nfsservctl", "modify_ldt",
)  # fmt: skip
#: Refused with ENOSYS: the C library then does the same with a call the filter can read.
UNSUPPORTED = ("clone3",)
#: `clone` flags that make a namespace.
CLONE_NAMESPACES = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
#: The `clone` flag that makes a thread rather than a process.
CLONE_THREAD = 0x00010000
#: New processes, refused in a single-process child.
FORKS = ("fork", "vfork")
#: Socket families a child may open: AF_UNIX, AF_INET, AF_INET6 (its network is only `lo`).
SOCKET_FAMILIES = (1, 2, 10)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(Exception):
    """The filter cannot be made here (no libseccomp, or it refused a rule)."""


@functools.cache
def program(single_process: bool = False) -> bytes:
    """The filter, as the BPF program bubblewrap's `--seccomp` reads (SeccompUnavailable)."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp is not installed ({exc})") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)
    ]  # fmt: skip
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    context = lib.seccomp_init(_ALLOW)
    if not context:
        raise SeccompUnavailable("libseccomp could not start a filter")
    try:
        if lib.seccomp_attr_set(context, _ATTR_ACT_BADARCH, _KILL_PROCESS):
            raise SeccompUnavailable("libseccomp would not kill on a foreign architecture")
        for name, action, conditions in _rules(single_process):
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a syscall on this architecture
            array = (_ArgCmp * max(len(conditions), 1))(*conditions)
            failed = lib.seccomp_rule_add_array(context, action, number, len(conditions), array)
            if failed:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {-failed}")
        descriptor = os.memfd_create("kernos-seccomp")
        try:
            if lib.seccomp_export_bpf(context, descriptor):
                raise SeccompUnavailable("libseccomp could not export the filter")
            os.lseek(descriptor, 0, os.SEEK_SET)
            return _read_all(descriptor)
        finally:
            os.close(descriptor)
    finally:
        lib.seccomp_release(context)


def _rules(single_process: bool) -> Iterator[tuple[str, int, list[_ArgCmp]]]:
    refuse, unsupported = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    for name in DENIED + (FORKS if single_process else ()):
        yield name, refuse, []
    if single_process:
        yield "clone", refuse, [_ArgCmp(0, _CMP_MASKED_EQ, CLONE_THREAD, 0)]
    for name in UNSUPPORTED:
        yield name, unsupported, []
    for flag in CLONE_NAMESPACES:
        # clone's flags are its first argument on x86-64 and arm64 alike.
        yield "clone", refuse, [_ArgCmp(0, _CMP_MASKED_EQ, flag, flag)]
    allowed = sorted(SOCKET_FAMILIES)
    for family in range(allowed[-1]):
        if family not in allowed:
            yield "socket", refuse, [_ArgCmp(0, _CMP_EQ, family, 0)]
    yield "socket", refuse, [_ArgCmp(0, _CMP_GT, allowed[-1], 0)]


def _read_all(descriptor: int) -> bytes:
    chunks = []
    while chunk := os.read(descriptor, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def program_fd(single_process: bool = False) -> Iterator[int]:
    """A file descriptor to read the filter from, once (bubblewrap reads it to its end)."""
    descriptor = os.memfd_create("kernos-seccomp")
    try:
        os.write(descriptor, program(single_process))
        os.lseek(descriptor, 0, os.SEEK_SET)
        yield descriptor
    finally:
        os.close(descriptor)
