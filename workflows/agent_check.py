"""Agents' modules imported at a host's start, in a throwaway child like a pool's: which fail.

The check is the operator's early warning, not a gate. Agent modules are tenants' code: one
tenant's module that does not import, hangs, or ends the process importing it must not keep
a host from serving every other tenant. The host logs each failure and goes on; a run of a
broken agent fails, naming the error, when its own pool's child imports the module.
"""

from __future__ import annotations

import collections
import functools
import pickle
import queue
import threading
from typing import IO

from kernos.workflows.pool_process import ChildSpec, bounded_lines, start_child
from kernos.workflows.pool_wire import READY, SETUP, ChildSetup, Frame, FrameError, FrameWriter
from kernos.workflows.pool_wire import receive as receive_frame

#: How many of a crashed check's last lines of output are kept in its reason.
_STDERR_LINES = 5


@functools.cache
def broken_agents(
    spec: ChildSpec, agents: tuple[tuple[str, str], ...], timeout_s: float
) -> dict[str, str]:
    """Agent name -> why its module does not import, for each of `agents` that does not.

    Each module gets `timeout_s` to import; one that takes longer, or ends its process, is
    named, and a new child checks the agents after it.
    """
    broken: dict[str, str] = {}
    remaining = list(agents)
    while remaining:
        answers = _check(spec, remaining, timeout_s)
        for (name, _), reason in zip(remaining, answers, strict=False):
            if reason is not None:
                broken[name] = reason
        remaining = remaining[len(answers) :]
    return broken


def _check(spec: ChildSpec, agents: list[tuple[str, str]], timeout_s: float) -> list[str | None]:
    """One child's answers, in order, up to and including the agent it stopped at (if any)."""
    paths = tuple(path for _, path in agents)
    setup = ChildSetup(pool="", agents=dict(agents), results_checked=False)
    process, cgroups = start_child(spec, "--check", agents=paths)
    assert process.stdin and process.stdout and process.stderr
    frames: queue.SimpleQueue[Frame | None] = queue.SimpleQueue()
    threading.Thread(target=_read, args=(process.stdout, frames), daemon=True).start()
    # Read as it comes (a module's warnings must not fill the pipe and stall it), last lines kept.
    said: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
    stderr = threading.Thread(target=said.extend, args=(bounded_lines(process.stderr),))
    stderr.start()
    answers: list[str | None] = []
    try:
        process.stdin.write(FrameWriter.frame(SETUP, 0, pickle.dumps(setup)))
        process.stdin.close()
        for index in range(len(agents)):
            try:
                frame = frames.get(timeout=timeout_s)
            except queue.Empty:
                answers.append(f"importing its module took over {timeout_s:.0f} s")
                break
            if frame is None or frame.request != index:
                process.kill()
                stderr.join(5)
                what = "ended the process" if frame is None else "broke the check's protocol"
                answers.append(f"importing its module {what}: {' | '.join(said)}")
                break
            why = frame.body[:4000].decode(errors="replace")
            answers.append(None if frame.kind == READY else why)
    except OSError as exc:
        answers.append(f"the check's process failed: {exc}")
    finally:
        process.kill()
        process.wait()
        stderr.join(5)
        for stream in (process.stdout, process.stderr):
            stream.close()
        if cgroups is not None:
            cgroups.remove()
    return answers


def _read(stream: IO[bytes], frames: queue.SimpleQueue[Frame | None]) -> None:
    try:
        while True:
            frames.put(receive_frame(stream, 1024 * 1024))
    except (FrameError, OSError, ValueError):
        frames.put(None)
