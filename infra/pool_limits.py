"""What one pool's child may use of its host: memory, processes, CPU, files.

Where the host runs as root with cgroup v1's `memory`, `pids` and `cpu` controllers (as here),
each child gets a cgroup of its own in each, under the host's own, made before the child
starts and removed after it ends: a memory limit, swap included (the kernel's OOM killer ends
the child, not the host or another pool), a process and thread count, and a CPU share (equal
by default, so a busy pool gets no more of a contended CPU than any other). Everywhere, an
rlimit bounds the child's open files. Where there are no cgroups (rootless, cgroup v2 without
delegation, or `[isolation] cgroups = false`), rlimits and the seccomp filter stand in, less
exactly: the child's address space is bounded (`RLIMIT_AS`: its memory limit, plus
`ADDRESS_ALLOWANCE_MIB` for what its interpreter and threads reserve but do not use), so a
hog meets `MemoryError`, which its host counts as the pool's memory limit; and the child may
start no process at all (`seccomp`, `single_process`), since the kernel counts processes per
user, and every pool's user is the same. Its CPU share is then its session group's
(`SessionWeight`): where the kernel has autogroups, each session weighs as one, at the nice
nearest `cpu_shares`; where it has none, each of its threads weighs as one, at that nice
(`rlimits`), which its code may not lower (`RLIMIT_NICE` 0).

The child is placed in its cgroups by a shell that writes its own pid into each and then
becomes the confined command, so nothing of the child ever runs outside them.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kernos.infra.daemons import alive

log = logging.getLogger(__name__)

#: Where cgroup v1's hierarchies are mounted.
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
#: A shell that moves itself into the cgroups named before `--`, then runs what follows.
_ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
#: The prefix of every child's cgroup name.
PREFIX = "kernos-pool-"


@dataclass(frozen=True)
class PoolLimits:
    """The limits of every pool's child on a host (`[isolation]` settings)."""

    memory_mib: int
    processes: int
    cpu_shares: int
    open_files: int


@functools.cache
def cgroups_shortfall() -> str | None:
    """Why children cannot have cgroups of their own here, or None if they can."""
    if os.geteuid() != 0:
        return "the host is not root (cgroups need it): rlimits only"
    for controller in CONTROLLERS:
        if _own(controller) is None:
            return f"no cgroup v1 {controller!r} hierarchy here: rlimits only"
    probe = _own("pids")
    assert probe is not None
    trial = probe / f"kernos-probe-{os.getpid()}"
    try:
        trial.mkdir()
        trial.rmdir()
    except OSError as exc:
        return f"cgroups cannot be made here ({exc}): rlimits only"
    return None


def _own(controller: str) -> Path | None:
    """The host's own cgroup directory in a v1 hierarchy, if the controller is mounted."""
    mount = CGROUP_ROOT / controller
    if not (mount / "cgroup.procs").exists():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return mount / path.lstrip("/")
    return None


class ChildCgroups:
    """One child's cgroups, with the pool limits written in; `remove` once it has ended."""

    def __init__(self, limits: PoolLimits) -> None:
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.paths: dict[str, Path] = {}
        try:
            for controller in CONTROLLERS:
                parent = _own(controller)
                assert parent is not None
                path = parent / name
                path.mkdir()
                self.paths[controller] = path
            memory, limit = self.paths["memory"], str(limits.memory_mib * 1024 * 1024)
            (memory / "memory.limit_in_bytes").write_text(limit)
            if (memory / "memory.memsw.limit_in_bytes").exists():
                # Swap counts too, or a hog would be swapped out rather than stopped.
                (memory / "memory.memsw.limit_in_bytes").write_text(limit)
            else:
                (memory / "memory.swappiness").write_text("0")
            (self.paths["pids"] / "pids.max").write_text(str(limits.processes))
            (self.paths["cpu"] / "cpu.shares").write_text(str(limits.cpu_shares))
        except BaseException:
            self.remove(tries=1)
            raise

    def enter(self, argv: list[str]) -> list[str]:
        """`argv`, run inside these cgroups from its first instruction."""
        procs = [str(path / "cgroup.procs") for path in self.paths.values()]
        return ["/bin/sh", "-c", _ENTER, "kernos-cgroups", *procs, "--", *argv]

    def over(self) -> str | None:
        """Which limit the child ran into, if any: what the kernel counted."""
        if _field(self.paths["memory"] / "memory.oom_control", "oom_kill"):
            return "memory"
        if _field(self.paths["pids"] / "pids.events", "max"):
            return "processes"
        return None

    def memory_bytes(self) -> int:
        """The memory the child uses now."""
        return _field(self.paths["memory"] / "memory.usage_in_bytes", None)

    def remove(self, tries: int = 50) -> None:
        """Remove the cgroups (their processes must be gone; a few tries while they exit)."""
        for path in self.paths.values():
            for _ in range(tries):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                log.warning("cgroup %s is still in use; left behind", path)


def _field(path: Path, key: str | None) -> int:
    """A number from a cgroup file: the whole file, or the line that starts with `key`."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        parts = line.split()
        if key is None and len(parts) == 1:
            return int(parts[0])
        if key is not None and len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


def sweep() -> None:
    """Remove the cgroups that children of a host no longer running left (one killed, say).

    Only those of hosts that are gone: another host's may be empty for the moment between
    being made and its child entering it.
    """
    if cgroups_shortfall() is not None:
        return
    for controller in CONTROLLERS:
        parent = _own(controller)
        for path in parent.glob(f"{PREFIX}*") if parent is not None else ():
            owner = path.name.removeprefix(PREFIX).partition("-")[0]
            if owner.isdigit() and alive(int(owner)):
                continue
            try:
                path.rmdir()
            except OSError:
                continue  # still in use


#: Address space a child reserves beyond what it uses: its interpreter and libraries, and 8 MiB
#: of stack for each of its ~110 threads (with `MALLOC_ARENA_MAX=2`; 1.0 GiB measured).
ADDRESS_ALLOWANCE_MIB = 1280
THREAD_STACK_MIB = 8


def rlimits(argv: list[str], limits: PoolLimits, *, cgrouped: bool) -> list[str]:
    """`argv` under `prlimit`: open files, and more where no cgroup bounds the child.

    Without cgroups, its address space, and the nice its threads start at and may not lower.
    """
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    bounds = [f"--nofile={limits.open_files}"]
    if not cgrouped:
        bounds.append(f"--as={(limits.memory_mib + ADDRESS_ALLOWANCE_MIB) << 20}")
        # Threads' stacks at the size the allowance counts, whatever the host's `ulimit -s`.
        bounds.append(f"--stack={THREAD_STACK_MIB << 20}")
        # Each thread at `cpu_shares`' nice, which is its CPU weight where the kernel has no
        # session groups (without the privilege to, RLIMIT_NICE 0 lets no nice be lowered;
        # raising it needs none). With them, its session group's nice sets its share instead
        # (`SessionWeight`), and its threads' only weigh among themselves.
        bounds.append("--nice=0")
        nice = shutil.which("nice") or "/usr/bin/nice"
        argv = [nice, "-n", str(autogroup_nice(limits.cpu_shares)), *argv]
    return [prlimit, *bounds, "--", *argv]


#: Where the kernel says whether it schedules sessions as groups (CONFIG_SCHED_AUTOGROUP).
AUTOGROUPS = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroups_shortfall() -> str | None:
    """Why a cgroup-less child's CPU weight cannot be set here, or None if it can."""
    try:
        enabled = AUTOGROUPS.read_text().strip() == "1"
    except OSError:
        return "this kernel schedules no session groups (no CONFIG_SCHED_AUTOGROUP)"
    return None if enabled else "kernel.sched_autogroup_enabled is 0"


def autogroup_nice(cpu_shares: int) -> int:
    """The nice whose CFS weight is nearest `cpu_shares` (1024 at nice 0, 1.25x a step)."""
    return max(0, min(19, round(math.log(1024 / cpu_shares, 1.25))))


class SessionMember:
    """The leader of the session a child's command runs in, once it is there.

    Confined, bubblewrap's own process inside the sandbox (the command is its child);
    unconfined, the child itself. Known by its pid and when it started (a pid can be reused),
    and looked for again when that is no longer so.
    """

    def __init__(self, pid: int, *, confined: bool) -> None:
        self.root = pid
        self.confined = confined
        self._member: tuple[int, int] | None = None

    def pid(self) -> int | None:
        """Its pid, or None while bubblewrap has not made it yet (or once it has ended)."""
        member = self._member
        if member is None or _started(member[0]) != member[1]:
            found = _session_member(self.root, confined=self.confined)
            member = (found, _started(found) or 0) if found is not None else None
            self._member = member
        return member[0] if member is not None else None

    def forget(self) -> None:
        """Look for it again next time."""
        self._member = None


class SessionWeight:
    """A cgroup-less child's CPU weight: the nice of its session's scheduling group.

    Each child runs in a session of its own (and bubblewrap's `--new-session` makes the
    confined command's another), and the kernel's autogroups share the CPU between sessions,
    not threads: a pool's process that hashes on four threads gets one group's share. The
    group's nice sets that share against the host's own processes, as `cpu.shares` does in a
    cgroup. Confined, the child's /proc is read-only, so its code cannot set the nice back (Linux
    asks no privilege for a nice of 0 or more); the host looks again at every turn of its pools'
    loop all the same. Unconfined (`process` mode), code that starts a process in a session of
    its own escapes the weight, as it escapes everything else there.
    """

    def __init__(self, member: SessionMember, cpu_shares: int) -> None:
        self.member = member
        self.nice = autogroup_nice(cpu_shares)
        #: The member whose group's nice was seen set: a change after is its code's.
        self._set_for: int | None = None

    def keep(self) -> bool:
        """Set the group's nice where it is not; whether it had been changed since it was set."""
        pid = self.member.pid()
        if pid is None:
            return False  # its session is not made yet: the next turn looks again
        path = Path(f"/proc/{pid}/autogroup")
        try:
            if path.read_text().split()[-1] == str(self.nice):
                self._set_for = pid
                return False
            path.write_text(str(self.nice))
        except (OSError, IndexError):
            # Gone, or (without CAP_SYS_ADMIN) the kernel's ten such writes a second are
            # spent: the next turn looks again.
            self.member.forget()
            self._set_for = None
            return False
        changed, self._set_for = self._set_for == pid, pid
        return changed


class CpuWait:
    """How long a child's process has waited for a CPU, and its CPU time, as Linux counts them.

    The wait is the sum of the run delays of its session's threads
    (`/proc/<pid>/task/<tid>/schedstat`: time runnable but not running), so that an
    activation's time is not charged for the host being crowded; the CPU time (its processes'
    `stat`) bounds what may be taken for crowding: a process whose own threads queue for the
    CPUs it is using waits on each of them, but is not crowded out (`crowded_s`). Each
    thread's delay is counted from when it is first seen, and at most `_MOST_THREADS` threads
    are read a look; a thread's that ended between two looks is lost: the sum errs low (the run
    is charged more, not less). Looked up at most every `_FRESH_S`: many activations may ask at
    once. Once frozen (the host stops), or its process gone, it no longer grows.
    """

    def __init__(self, member: SessionMember, alive: Callable[[], bool]) -> None:
        self.member = member
        self._alive = alive
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._threads: dict[int, int] = {}
        self._waited_ns = 0
        self._cpu_ticks = 0
        self._last = CpuLook(time.monotonic(), 0.0, 0.0)
        self._frozen = False

    def look(self) -> CpuLook:
        """The last look: when (monotonic), the time waited and the CPU used so far.

        Only their growth means anything.
        """
        with self._lock:
            if not self._frozen and time.monotonic() - self._last.at >= _FRESH_S:
                if self._alive():
                    self._look()
                else:
                    self._frozen = True
            return self._last

    def freeze(self) -> None:
        """Grow no more: the host is stopping, and times its activations on the wall again."""
        with self._lock:
            self._frozen = True

    def _look(self) -> None:
        at = time.monotonic()
        pid = self.member.pid()
        if pid is None:
            return
        if pid != self._pid:
            self._pid, self._threads = pid, {}
        seen: dict[int, int] = {}
        cpu = 0
        for process in [pid, *descendants(pid, _MOST_PROCESSES)]:
            fields = _stat(process)
            if fields is None:
                continue
            # Its threads' time, and its children's once it has reaped them: a process that
            # ends does not take the CPU it used out of the count.
            cpu += sum(int(field) for field in fields[11:15])
            try:
                threads = os.listdir(f"/proc/{process}/task")
            except OSError:
                continue
            for name in threads[: _MOST_THREADS - len(seen)]:
                try:
                    schedstat = Path(f"/proc/{process}/task/{name}/schedstat").read_text()
                    delay = int(schedstat.split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                tid = int(name)
                seen[tid] = delay
                self._waited_ns += max(0, delay - self._threads.get(tid, delay))
        self._threads = seen
        # (Never less than before: a child's own child that ended unreaped is out of the count.)
        self._cpu_ticks = max(self._cpu_ticks, cpu)
        self._last = CpuLook(at, self._waited_ns / 1e9, self._cpu_ticks / _TICKS)


@dataclass(frozen=True)
class CpuLook:
    """One look at a child's process: when, the time it had waited for a CPU, its CPU time."""

    at: float
    waited_s: float
    cpu_s: float

    def crowded_s(self, since: CpuLook) -> float:
        """The time since `since` that the process was kept from a CPU by others.

        No more than its wait, and no more than the time it did not use a CPU: its own
        threads queueing for the CPUs it is using do not count.
        """
        return max(
            0.0,
            min(self.waited_s - since.waited_s, (self.at - since.at) - (self.cpu_s - since.cpu_s)),
        )


def descendants(pid: int, most: int) -> list[int]:
    """Up to `most` of `pid`'s descendant processes, nearest first."""
    found: list[int] = []
    queue = [pid]
    while queue and len(found) < most:
        parent = queue.pop(0)
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found.extend(map(int, children))
        queue.extend(map(int, children))
    return found[:most]


#: The processes of a child whose threads' waits are counted (bubblewrap's, the interpreter,
#: the first it may have started): a fork bomb's are not looked through.
_MOST_PROCESSES = 8
#: The threads read a look (a pool's process runs up to 100 activations at once): code that
#: starts thousands cannot make each look cost the host more.
_MOST_THREADS = 128
#: Clock ticks a second, as /proc counts CPU time.
_TICKS = os.sysconf("SC_CLK_TCK")
#: How old a child's CPU wait may be when asked for: each look reads a file per thread, and on
#: a crowded host every pool's activations ask (100 pools of 25 threads: 2,500 files a second).
_FRESH_S = 1.0


def _session_member(pid: int, *, confined: bool) -> int | None:
    """A process of the session the child's command runs in, once it is there.

    Confined: the first descendant of `pid` that leads a session of its own (bubblewrap's
    `--new-session`; None until it has made it). Unconfined: `pid`, which leads its own.
    """
    if _session(pid) is None:
        return None
    if not confined:
        return pid
    return next((c for c in descendants(pid, _MOST_PROCESSES) if _session(c) == c), None)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after its name (which may hold anything)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _session(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[3]) if fields is not None else None


def _started(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with its pid, who it is."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None
