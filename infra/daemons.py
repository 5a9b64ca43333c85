"""Processes the embedded stack starts and stops by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path


def spawn(
    args: list[str], log_file: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `args` in a session of its own, output appended to `log_file`.

    Its own session, so it outlives the command that started it and a signal to its process
    group reaches the helpers it forks (the Temporal UI server).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        return subprocess.Popen(
            args,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )


def alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def stop(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group of `pid`, then SIGKILL it if it outlives `timeout_s`."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, signum)
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
            time.sleep(0.05)
        if not alive(pid):
            return


def kill(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL the process group of `pid` (a crash, for tests and stuck servers) and reap it."""
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
