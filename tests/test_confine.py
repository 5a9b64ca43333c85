"""bubblewrap's view, as root and rootless: nobody, no capabilities, no network, no files."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kernos.infra import confine

PROBE = (
    "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
    "ls /etc/passwd /root/.bash_history 2>&1 | wc -l; ls /proc | grep -c '^[0-9]'"
)


def confined(argv: list[str], user: int | None = None) -> list[str]:
    done = subprocess.run(
        [*argv, "/bin/sh", "-c", PROBE], capture_output=True, text=True, timeout=30, user=user
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def expect_nothing(lines: list[str]) -> None:
    uid, _, caps, _, no_new_privs, *rest = lines
    interfaces, processes = rest[:-2], int(rest[-1])
    assert uid == str(confine.NOBODY)
    assert caps == "0000000000000000"
    assert no_new_privs == "1"
    assert interfaces == ["lo"]
    assert processes <= 4  # bubblewrap's init, the shell and its pipeline


def test_as_the_kernel_runs_here(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "kernel.toml").write_text("secret")
    argv = confine.bwrap_argv([tmp_path], [state], {"HOME": "/tmp"})
    done = subprocess.run(
        [*argv, "/bin/sh", "-c", f"ls -A {state} | wc -l; env | wc -l"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.split()[0] == "0"  # the state directory shows empty
    assert int(done.stdout.split()[1]) <= 4  # HOME, PWD, SHLVL, _: the shell's own
    expect_nothing(confined(argv))


@pytest.mark.skipif(os.geteuid() != 0, reason="the host runs rootless already: the test above")
def test_rootless(monkeypatch: pytest.MonkeyPatch) -> None:
    # As an ordinary user, bubblewrap's own user namespace maps the caller to nobody.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    argv = confine.bwrap_argv([], [], {})
    assert "--unshare-all" in argv and not any("setpriv" in part for part in argv)
    expect_nothing(confined(argv, user=confine.NOBODY))


def doors(seccomp: bool, user: int | None = None) -> dict[str, str]:
    """`tests/kernel_doors.py` run in bubblewrap's view, with or without the seccomp filter.

    By the system's interpreter, which `nobody` can run (the venv's may live in root's home).
    """
    script = Path(__file__).with_name("kernel_doors.py")
    with confine.seccomp_fd() as fd:
        assert fd is not None, confine.seccomp_shortfall()
        argv = confine.bwrap_argv([script.parent], [], {}, fd if seccomp else None)
        done = subprocess.run(
            [*argv, "/usr/bin/python3", str(script)],
            capture_output=True, text=True, timeout=60, user=user, pass_fds=(fd,),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout)
    return found


def test_seccomp_shuts_the_kernels_riskier_doors() -> None:
    # Without the filter the namespaces leave each of them open: the probes can tell.
    assert set(doors(seccomp=False).values()) == {"open"}
    assert set(doors(seccomp=True).values()) == {"EPERM"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the host runs rootless already: the test above")
def test_seccomp_rootless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert set(doors(seccomp=True, user=confine.NOBODY).values()) == {"EPERM"}


def test_the_filter_leaves_what_python_needs() -> None:
    # Threads (clone3 answers ENOSYS, the C library falls back to clone), a process, and
    # sockets of the families a child may use.
    script = (
        "import socket, subprocess, threading; t = threading.Thread(target=print); t.start(); "
        "t.join(); socket.socketpair(); socket.socket(socket.AF_INET6).close(); "
        "print(subprocess.run(['/bin/true']).returncode)"
    )
    with confine.seccomp_fd() as fd:
        argv = confine.bwrap_argv(*confine.import_roots([]), {}, fd)
        done = subprocess.run(
            [*argv, sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, pass_fds=() if fd is None else (fd,),
        )  # fmt: skip
    assert done.returncode == 0 and done.stdout.split()[-1] == "0", done.stderr


def test_a_single_process_filter_allows_threads_and_no_process() -> None:
    # Where no cgroup counts a pool's processes: threads still start, fork and vfork do not.
    script = (
        "import os, threading; t = threading.Thread(target=print); t.start(); t.join()\n"
        "for fork in (os.fork, lambda: os.posix_spawn('/bin/true', ['true'], {})):\n"
        "    try:\n"
        "        pid = fork()\n"
        "    except PermissionError:\n"
        "        print('refused')\n"
        "    else:\n"
        "        os._exit(0) if pid == 0 else print('started')\n"
    )
    with confine.seccomp_fd(single_process=True) as fd:
        argv = confine.bwrap_argv(*confine.import_roots([]), {}, fd)
        done = subprocess.run(
            [*argv, sys.executable, "-c", script],
            capture_output=True, text=True, timeout=60, pass_fds=() if fd is None else (fd,),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "refused"], done.stdout


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x32 syscalls exist on x86-64 only")
def test_a_syscall_of_another_abi_kills_the_process() -> None:
    # getpid through the x32 ABI: a foreign architecture to the filter, so SIGSYS, not an errno.
    script = "import ctypes; ctypes.CDLL(None).syscall(39 | 0x40000000); print('survived')"
    with confine.seccomp_fd() as fd:
        argv = confine.bwrap_argv([], [], {}, fd)
        done = subprocess.run(
            [*argv, "/usr/bin/python3", "-c", script],
            capture_output=True, text=True, timeout=60, pass_fds=() if fd is None else (fd,),
        )  # fmt: skip
    assert done.returncode == 128 + signal.SIGSYS and "survived" not in done.stdout


def test_mode_bwrap_refuses_to_start_without_the_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernos.kernel.config import IsolationSettings
    from kernos.kernel.errors import ConfigError
    from kernos.workflows.pool_process import confinement

    assert confinement(IsolationSettings(mode="bwrap")).confined
    assert "seccomp" in confine.report("bwrap")[1]  # what `kernos status` says
    monkeypatch.setattr(confine, "seccomp_shortfall", lambda: "libseccomp is not installed")
    with pytest.raises(ConfigError, match="without their seccomp filter: libseccomp"):
        confinement(IsolationSettings(mode="bwrap"))
    assert "NO SECCOMP FILTER" in confine.report("bwrap")[1]
    assert confinement(IsolationSettings(mode="auto")).confined  # auto goes on, said loudly
