"""Doors into the Linux kernel that a confined child must find shut: each tried, its outcome.

Each probe is harmless where the door is open (it opens and closes a netlink socket, reads
its own memory, asks for its own keyring, a persona, an io_uring, a user namespace in a
throwaway process), so it can run in the test process and in an agent worker alike; shut,
it reports the errno (`EPERM` from the seccomp filter). `python -m tests.kernel_doors` prints
them as JSON.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import socket
import subprocess

#: Syscall numbers glibc has no wrapper for, by machine.
_NUMBERS = {
    "x86_64": {"keyctl": 250, "io_uring_setup": 425},
    "aarch64": {"keyctl": 219, "io_uring_setup": 425},
}
OPEN = "open"


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _outcome(result: int) -> str:
    return OPEN if result >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")


def _netlink() -> str:
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, "?")
    return OPEN


def _own_memory(libc: ctypes.CDLL) -> str:
    source, target = ctypes.create_string_buffer(b"door"), ctypes.create_string_buffer(4)
    local = _IoVec(ctypes.cast(target, ctypes.c_void_p), 4)
    remote = _IoVec(ctypes.cast(source, ctypes.c_void_p), 4)
    libc.process_vm_readv.restype = ctypes.c_ssize_t
    return _outcome(
        libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    )


def _syscall(libc: ctypes.CDLL, name: str, *arguments: int) -> int:
    number = _NUMBERS[platform.machine()][name]
    result: int = libc.syscall(number, *(ctypes.c_long(argument) for argument in arguments))
    return result


def _keyring(libc: ctypes.CDLL) -> str:
    # KEYCTL_GET_KEYRING_ID of KEY_SPEC_PROCESS_KEYRING, without creating it.
    result = _syscall(libc, "keyctl", 0, -2, 0)
    if result < 0 and ctypes.get_errno() == errno.ENOKEY:
        return OPEN  # asked and answered: there is none
    return _outcome(result)


def _io_uring(libc: ctypes.CDLL) -> str:
    parameters = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    result = _syscall(libc, "io_uring_setup", 1, ctypes.addressof(parameters))
    if result >= 0:
        os.close(result)
    return _outcome(result)


def _persona(libc: ctypes.CDLL) -> str:
    return _outcome(libc.personality(0xFFFFFFFF))


def _user_namespace() -> str:
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    try:
        done = subprocess.run(
            [unshare, "--user", "true"], capture_output=True, text=True, timeout=10
        )
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, "?")
    if done.returncode == 0:
        return OPEN
    return "EPERM" if "not permitted" in done.stderr else done.stderr.strip()[:80]


def kernel_doors() -> dict[str, str]:
    """Each door's outcome: `open`, or the errno it was shut with."""
    libc = ctypes.CDLL(None, use_errno=True)
    return {
        "netlink_socket": _netlink(),
        "process_vm_readv": _own_memory(libc),
        "keyctl": _keyring(libc),
        "io_uring": _io_uring(libc),
        "personality": _persona(libc),
        "user_namespace": _user_namespace(),
    }


if __name__ == "__main__":
    print(json.dumps(kernel_doors()))
