"""A pool's child process, as its host sees it: how it is confined, started, and spoken to.

The child runs `python -m kernos.workflows.pool_child` under bubblewrap (or, where the host
cannot confine, as a plain process) with an empty environment and a view of only what it
needs to import the kernel and the agents (`kernos.infra.confine`). The host speaks to it
over its stdin and stdout in frames (`pool_wire`), from many threads at once; nothing the
child sends is unpickled, and a child that stops answering, sends what it was not asked or
exits fails the activations waiting on it (`ChildDied`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from kernos.infra import confine
from kernos.infra.pool_limits import (
    ChildCgroups,
    CpuLook,
    CpuWait,
    PoolLimits,
    SessionMember,
    SessionWeight,
    autogroups_shortfall,
    cgroups_shortfall,
    rlimits,
)
from kernos.kernel.config import (
    CREDENTIAL_FILES,
    PROCESS_KINDS,
    IsolationSettings,
    Settings,
    dsn_files,
    state_dir,
)
from kernos.kernel.errors import ConfigError
from kernos.workflows.pool_wire import (
    ACTIVATE,
    COMPLETION,
    CREATE,
    DROP,
    ERROR,
    LOADED,
    READY,
    SETUP,
    ChildSetup,
    Frame,
    FrameError,
    FrameWriter,
    InstanceSpec,
    receive,
)

log = logging.getLogger(__name__)

#: The largest answer a child may send: a completion's payloads are 2 MiB each at most, and
#: Temporal takes no more than 4 MiB in one message.
MAX_ANSWER = 16 * 1024 * 1024
#: Lines of a child's stderr that reach the host's log, and how long each may be.
MAX_LOG_LINES = 1000
MAX_LOG_LINE = 2000
#: How long a new child may take to start (import the kernel and Temporal's SDK).
CHILD_START_S = 60.0
#: How many times `[isolation] activation_timeout_s` an activation may take in all, while its
#: pool's process waits for a CPU on a crowded host or a new process loads what every pool's
#: process loads (neither of which the timeout counts).
CROWDED_TIMES = 4
#: When an activation's wait is first looked at, and how often after.
_FIRST_LOOK_S = 1.0
_LOOK_EVERY_S = 0.5


@dataclass(frozen=True)
class Confinement:
    """How this host confines its pools' children, and why not if it does not."""

    mode: Literal["bwrap", "process"]
    shortfall: str | None = None
    """Why bubblewrap is not used where `auto` wanted it."""

    @property
    def confined(self) -> bool:
        """Whether children are confined by the operating system."""
        return self.mode == "bwrap"


def confinement(isolation: IsolationSettings) -> Confinement:
    """The confinement `[isolation] mode` asks for, as this host can give it (ConfigError)."""
    if isolation.mode == "process":
        return Confinement("process")
    shortfall = confine.bwrap_works()
    if shortfall is None and isolation.mode == "bwrap" and confine.seccomp_shortfall():
        raise ConfigError(
            f"[isolation] mode = 'bwrap', but children would run without their seccomp filter: "
            f"{confine.seccomp_shortfall()} (install libseccomp2, or choose mode 'auto')"
        )
    if shortfall is None:
        return Confinement("bwrap")
    if isolation.mode == "bwrap":
        raise ConfigError(
            f"[isolation] mode = 'bwrap', but {shortfall}: install bubblewrap "
            "(`apt-get install bubblewrap`) or choose another mode"
        )
    return Confinement("process", shortfall)


@dataclass(frozen=True)
class ChildSpec:
    """What every child of a host is started with: its confinement, view and limits."""

    how: Confinement
    agents: tuple[str, ...]
    """Every agent's `module:Class` (their packages are in the child's view)."""
    hidden: tuple[Path, ...]
    limits: PoolLimits
    cgrouped: bool
    """Whether each child gets cgroups; if not, rlimits and seccomp bound it (`pool_limits`)."""


def child_spec(settings: Settings) -> ChildSpec:
    """The children's spec from the host's settings (ConfigError where it cannot be met)."""
    isolation = settings.isolation
    return ChildSpec(
        how=confinement(isolation),
        agents=tuple(settings.agents.values()),
        hidden=tuple(hidden_paths(settings)),
        limits=PoolLimits(
            memory_mib=isolation.memory_mib,
            processes=isolation.processes,
            cpu_shares=isolation.cpu_shares,
            open_files=isolation.open_files,
        ),
        cgrouped=isolation.cgroups and cgroups_shortfall() is None,
    )


def hidden_paths(settings: Settings) -> list[Path]:
    """What a child must not see, should its view include it.

    State, settings, spans, anchors, and the files of every Temporal credential (a key or an
    API key kept in a checkout, say).
    """
    hidden = [state_dir(), Path(".kernos"), Path(os.environ.get("KERNOS_CONFIG", "kernos.toml"))]
    hidden += [path for path in (settings.audit.anchor_sink, settings.telemetry.spans_file) if path]
    temporal = settings.temporal
    for credentials in (temporal, *(getattr(temporal, kind) for kind in PROCESS_KINDS)):
        if credentials is not None:
            hidden += [getattr(credentials, name) for name in CREDENTIAL_FILES]
    hidden += dsn_files(settings.database)
    return [path for path in hidden if path is not None and path.exists()]


def child_command(
    how: Confinement,
    agents: tuple[str, ...],
    hidden: tuple[Path, ...],
    *arguments: str,
    seccomp_fd: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a child: bubblewrap's view, or a plain process."""
    modules = [path.partition(":")[0] for path in agents]
    roots, python_path = confine.import_roots(modules)
    environment = {
        "PYTHONPATH": os.pathsep.join(str(path) for path in python_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # Two malloc arenas, not eight per CPU: what a thread reserves stays small, for a
        # bound on the address space (`pool_limits.rlimits`).
        "MALLOC_ARENA_MAX": "2",
    }
    command = [sys.executable, "-m", "kernos.workflows.pool_child", *arguments]
    if not how.confined:
        return command, environment
    return confine.bwrap_argv(roots, hidden, environment, seccomp_fd) + command, {}


def start_child(
    spec: ChildSpec, *arguments: str, agents: tuple[str, ...] | None = None
) -> tuple[subprocess.Popen[bytes], ChildCgroups | None]:
    """Start a child (`pool_child` with `arguments`) with its pipes open, in a session.

    Where the host has cgroups, the child is in its own, which the caller removes once the
    child has ended. `agents`: the modules whose packages it sees, if not every agent's.
    """
    try:
        cgroups = ChildCgroups(spec.limits) if spec.cgrouped else None
    except OSError as exc:
        raise ChildDied(f"the pool's cgroups could not be made: {exc}", counted=False) from exc
    try:
        with _seccomp_fd(spec.how, single_process=not spec.cgrouped) as fd:
            argv, environment = child_command(
                spec.how, spec.agents if agents is None else agents, spec.hidden, *arguments,
                seccomp_fd=fd,
            )  # fmt: skip
            argv = rlimits(argv, spec.limits, cgrouped=spec.cgrouped)
            process = subprocess.Popen(
                cgroups.enter(argv) if cgroups is not None else argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment,
                cwd="/",
                start_new_session=True,
                pass_fds=() if fd is None else (fd,),
            )
    except BaseException:
        if cgroups is not None:
            cgroups.remove()
        raise
    return process, cgroups


@contextlib.contextmanager
def _seccomp_fd(how: Confinement, *, single_process: bool) -> Iterator[int | None]:
    """The seccomp filter for one confined child's start, or None for a plain process."""
    if not how.confined:
        yield None
        return
    with confine.seccomp_fd(single_process) as fd:
        yield fd


def bounded_lines(stream: IO[bytes]) -> Iterator[str]:
    """The lines of a child's output, each cut to `MAX_LOG_LINE` bytes as it is read."""
    while line := stream.readline(MAX_LOG_LINE):
        if not line.endswith(b"\n"):
            # The rest of an over-long line is read and dropped, a bounded piece at a time.
            while (rest := stream.readline(MAX_LOG_LINE)) and not rest.endswith(b"\n"):
                pass
        yield line.decode(errors="replace").rstrip()


class PoolChild:
    """One child process and the pipe to it; activations from many threads, multiplexed."""

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.process, self._cgroups = start_child(spec)
        #: When it last answered an activation (monotonic): idle pools are stopped.
        self.last_used = time.monotonic()
        #: When it started, or became its pool's.
        self.since = self.last_used
        assert self.process.stdin and self.process.stdout and self.process.stderr
        # Frames go out through a queue and a thread of their own: a child that stops reading
        # blocks that thread only, never a caller (who waits with a deadline).
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._stdout = self.process.stdout
        self._requests = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Frame]] = {}
        #: Activations given back while the child still runs them (their answers are dropped),
        #: each with the time it has had.
        self._given_back: dict[int, ActivationTime] = {}
        self._lock = threading.Lock()
        self._ready = concurrent.futures.Future[None]()
        #: When it had loaded the packages every pool's process loads (None: not yet).
        self.loaded_at: float | None = None
        self._limit: str | None = None
        self._retired = False
        #: Why the host ended the child, where one run's activation was the cause: the other
        #: runs it was running are not charged with its end.
        self._ended_for: str | None = None
        self.pool: str | None = None
        member = SessionMember(self.process.pid, confined=spec.how.confined)
        #: Without cgroups, its CPU weight: its session's scheduling group's nice.
        self._weight = (
            SessionWeight(member, spec.limits.cpu_shares)
            if not spec.cgrouped and autogroups_shortfall() is None
            else None
        )
        #: How long others kept its process from a CPU: not counted against its activations.
        self.cpu_wait = CpuWait(member, lambda: self.process.poll() is None)
        for target, name in ((self._read, "reader"), (self._write, "writer"), (self._log, "log")):
            threading.Thread(target=target, name=f"pool-child-{name}", daemon=True).start()

    def assign(self, setup: ChildSetup) -> None:
        """Make this child the pool's: from now on it serves only `setup.pool`'s runs."""
        self.pool = setup.pool
        self.since = self.last_used = time.monotonic()
        self.keep_weight()
        self._send(SETUP, 0, pickle.dumps(setup))

    def keep_weight(self) -> bool:
        """Without cgroups, set its CPU weight where it is not; whether its code had changed it.

        Never once the process has been reaped: its pid may then be another's.
        """
        if self._weight is None or self.process.poll() is not None:
            return False
        return self._weight.keep()

    def _send(self, kind: bytes, request: int, body: bytes) -> None:
        self._outbox.put(FrameWriter.frame(kind, request, body))

    def _write(self) -> None:
        assert self.process.stdin is not None
        writer = self.process.stdin
        while (data := self._outbox.get()) is not None:
            try:
                writer.write(data)
                writer.flush()
            except (OSError, ValueError):
                self.kill()
                return

    def _log(self) -> None:
        """The child's stderr, into this process's log, prefixed and cut short.

        At most `MAX_LOG_LINES` lines of `MAX_LOG_LINE` bytes: a child can neither fill the disk
        nor, with a line that never ends, the host's memory.
        """
        assert self.process.stderr is not None
        for number, text in enumerate(bounded_lines(self.process.stderr), start=1):
            if number <= MAX_LOG_LINES:
                log.warning("pool %s says: %s", self.pool or "(spare)", text)
            elif number == MAX_LOG_LINES + 1:
                log.warning("pool %s: further output from its process dropped", self.pool)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the child has started (ChildDied if it did not)."""
        try:
            self._ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self.kill()
            raise ChildDied(f"the pool's process did not start within {timeout:.0f} s") from None

    def create(self, instance_id: int, spec: InstanceSpec) -> None:
        """Tell the child about an instance; it makes it at its first activation."""
        self._send(CREATE, instance_id, pickle.dumps(spec))

    def activate(
        self,
        instance_id: int,
        activation: bytes,
        timeout: float,
        can_give_back: Callable[[Callable[[str], None]], None] | None = None,
        run: str = "",
    ) -> Frame:
        """Send an activation of `run` and wait for the child's answer (ChildDied on none).

        `can_give_back`, if given, is handed a function that ends the wait at once with
        `GivenBack(reason)`; the child then drops the instance once its code lets go of it,
        which must still be within `timeout` (`overdue`).
        """
        request = next(self._requests)
        had = ActivationTime(run, timeout, self.cpu_wait, lambda: self.loaded_at)
        answer = concurrent.futures.Future[Frame]()
        with self._lock:
            if self._retired:
                raise ChildDied("the pool's process was stopped, idle", counted=False)
            if self.process.poll() is not None:
                raise ChildDied("the pool's process has exited")
            self._pending[request] = answer
        if can_give_back is not None:
            can_give_back(lambda reason: self._give_back(request, reason, had))
        try:
            self._send(ACTIVATE, request, instance_id.to_bytes(8, "big") + activation)
            wait = min(timeout, _FIRST_LOOK_S)
            while True:
                try:
                    return answer.result(wait)
                except concurrent.futures.TimeoutError:
                    over = had.over()
                    if over is not None:
                        self.end("another run's activation did not answer in time")
                        raise ChildDied(
                            f"the pool's process did not answer {over}", limit="activation time"
                        ) from None
                    wait = _LOOK_EVERY_S
        except FrameError as exc:
            raise ChildDied(f"the activation could not be sent: {exc}") from exc
        except GivenBack:
            self._send(DROP, instance_id, b"")
            raise
        finally:
            self.last_used = time.monotonic()
            with self._lock:
                self._pending.pop(request, None)

    def _give_back(self, request: int, reason: str, had: ActivationTime) -> None:
        """End the wait for `request`'s answer with `GivenBack`; its answer will be dropped."""
        with self._lock:
            answer = self._pending.pop(request, None)
            if answer is None or answer.done():
                return
            self._given_back[request] = had
        answer.set_exception(GivenBack(reason))

    def overdue(self) -> tuple[str, str] | None:
        """An activation given back that the child still runs past its time: its run, and how.

        The child is then ended, as for any activation that does not answer in time (the
        other runs it ran are not charged), and the caller charges that run.
        """
        with self._lock:
            if not self.alive:
                # Ended already, by whatever ended it: nothing is running any more.
                self._given_back.clear()
                return None
            given_back = list(self._given_back.values())
        late = next(
            ((had.run, over) for had in given_back if (over := had.over()) is not None), None
        )
        if late is not None:
            with self._lock:
                self._given_back.clear()
            self.end("another run's activation did not answer in time")
        return late

    def end(self, why: str) -> None:
        """Kill the child for one run's activation: the others it ran are not charged."""
        with self._lock:
            self._ended_for = why
        self.kill()

    def retire_if_idle(self, idle_s: float) -> bool:
        """Take the child out of service if no activation has used it for `idle_s`.

        Not while an activation waits on it. True if taken out: the caller then kills it.
        """
        with self._lock:
            if self._pending or time.monotonic() - self.last_used <= idle_s:
                return False
            self._retired = True
            return True

    def memory_bytes(self) -> int | None:
        """The memory its process uses now, where its cgroup counts it."""
        return self._cgroups.memory_bytes() if self._cgroups is not None else None

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the child at once; activations waiting on it fail."""
        self._outbox.put(None)
        if self.alive:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("pool %s: its process did not exit after SIGKILL", self.pool)
            return
        with self._lock:
            cgroups, self._cgroups = self._cgroups, None
            if cgroups is not None:
                # Counted before the cgroups go: what ended the child, if a limit did.
                self._limit = cgroups.over()
        if cgroups is not None:
            cgroups.remove()

    def _death(self, reason: str) -> ChildDied:
        """Why the child ended, naming the limit it ran into if one ended it."""
        with self._lock:
            limit = self._cgroups.over() if self._cgroups is not None else self._limit
        limits = self.spec.limits
        if limit is None and self._ended_for is not None:
            return ChildDied(f"the pool's process was ended: {self._ended_for}", counted=False)
        if limit == "memory":
            reason = f"the pool's process went over its memory limit ({limits.memory_mib} MiB)"
        elif limit == "processes":
            reason = f"{reason}, after reaching its process limit ({limits.processes})"
        return ChildDied(reason, limit=limit)

    def _read(self) -> None:
        """Hand each answer to the activation waiting for it; anything else ends the child."""
        reason = "the pool's process exited"
        try:
            while True:
                frame = receive(self._stdout, MAX_ANSWER)
                if frame.kind == READY and not self._ready.done():
                    self._ready.set_result(None)
                    continue
                if frame.kind == LOADED and self._ready.done() and self.loaded_at is None:
                    self.loaded_at = time.monotonic()
                    continue
                # Whoever takes a request out of `_pending` (here, `_give_back`, the end below)
                # is the one to settle its future: never two at once.
                with self._lock:
                    waiting = self._pending.pop(frame.request, None)
                    if waiting is None and frame.request in self._given_back:
                        del self._given_back[frame.request]
                        continue
                if frame.kind not in (COMPLETION, ERROR) or waiting is None:
                    reason = "the pool's process sent an answer to nothing it was asked"
                    self.kill()
                    break
                waiting.set_result(frame)
        except (FrameError, OSError, ValueError):
            pass
        died = self._death(reason)
        # Those waiting learn at once; the process and its cgroups are cleaned up after.
        with self._lock:
            waiting_now = list(self._pending.values())
            self._pending.clear()
            self._given_back.clear()
        if not self._ready.done():
            self._ready.set_exception(died)
        for future in waiting_now:
            future.set_exception(died)
        self.kill()


class ActivationTime:
    """The time one activation has had in its pool's process, and whether it is over.

    `[isolation] activation_timeout_s` counts the time the process ran or slept for the run,
    not the time others kept it from a CPU (`CpuLook.crowded_s`): on a crowded host an honest
    activation is slow, not stuck, and ending its process would only make every run in it
    replay, more work for a host that has too much. Nor does it count the time before the
    process had loaded what every pool's process loads (a new pool's first activation may be
    sent while it does: the kernel's work, seconds on a busy host). That time counts from the
    activation's first look after both (`_FIRST_LOOK_S`); in all, an activation has
    `CROWDED_TIMES` the timeout at most. It is over once: the thread that waits for it and the
    host's loop (for one given back) may ask at the same moment, and only one ends the process
    and charges the run.
    """

    def __init__(
        self,
        run: str,
        timeout: float,
        cpu_wait: CpuWait,
        loaded_at: Callable[[], float | None],
    ) -> None:
        self.run = run
        self.timeout = timeout
        self._cpu_wait = cpu_wait
        self._loaded_at = loaded_at
        self._sent = time.monotonic()
        #: The first look at the process once its time counts: what it was kept from a CPU
        #: since is not counted.
        self._first: CpuLook | None = None
        self._lock = threading.Lock()
        self._over = False

    def over(self) -> str | None:
        """How the activation is over its time (to follow "did not answer"), or None.

        Said once: asked again after, None.
        """
        now = time.monotonic()
        took = now - self._sent
        if took < min(self.timeout, _FIRST_LOOK_S):
            return None
        loaded = self._loaded_at()
        counts_from = None if loaded is None else max(self._sent, loaded)
        look = self._cpu_wait.look()
        with self._lock:
            if self._over:
                return None
            if self._first is None and counts_from is not None and look.at >= counts_from:
                self._first = look
            crowded = look.crowded_s(self._first) if self._first is not None else 0.0
            counted = 0.0 if counts_from is None else now - counts_from
            own = f"within {self.timeout:.0f} s ([isolation] activation_timeout_s"
            if counted - crowded >= self.timeout:
                self._over = True
                also = f"; it waited {crowded:.0f} s more for a CPU" if crowded >= 1 else ""
                return f"{own}{also})"
            if took >= CROWDED_TIMES * self.timeout:
                self._over = True
                return (
                    f"{own}, and {CROWDED_TIMES} times that at most while it waited for a CPU "
                    f"or for its process to load: {took:.0f} s, {took - counted + crowded:.0f} "
                    "s of them waiting)"
                )
        return None


class GivenBack(Exception):
    """The host gave the activation back to Temporal before the child answered it."""


class ChildDied(Exception):
    """A pool's child exited, broke the protocol, or stopped answering."""

    def __init__(self, reason: str, *, limit: str | None = None, counted: bool = True) -> None:
        super().__init__(reason)
        #: The pool limit that ended it ("memory", "processes", "activation time"), if one did.
        self.limit = limit
        #: Whether it counts against the runs it ran: not where the host itself stopped it.
        self.counted = counted
