"""Confining a process that runs agent code: bubblewrap's namespaces, or nothing.

A confined child gets its own mount, PID, IPC, UTS, cgroup and network namespaces (only a
loopback interface, down); it runs as `nobody` with every capability dropped and no new
privileges, in its own session (no terminal to inject into), and sees a read-only view of
what Python needs to import the kernel and agents' code, nothing else (no `/etc`, `/home`,
`/var`, no home folder but the interpreter's own directory where it lives there, no kernel
state: a tmpfs over it where it would show), a private `/tmp` and `/proc`, and an empty
environment, behind a seccomp filter (`kernos.infra.seccomp`). As root, `setpriv` drops the
child to the real uid `nobody` once bubblewrap has set it up; as an ordinary user,
bubblewrap's user namespace maps the caller to `nobody`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from kernos.infra import seccomp

log = logging.getLogger(__name__)

#: The unprivileged user and group the child runs as.
NOBODY = 65534
#: The size of a child's private /tmp.
TMP_BYTES = 16 * 1024 * 1024
#: The system directories a Python interpreter needs, where they exist.
SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


def bwrap_path() -> str | None:
    """Bubblewrap's executable, if installed."""
    return shutil.which("bwrap")


def import_roots(agent_modules: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """What a child must see to import the kernel and the agents, and its import path.

    The interpreter, the venv (and every import path entry inside them), the kernel's sources
    (an editable install's link tree points into them), and each agent's top-level package
    or module where it lies outside those: never the working directory or a script's folder
    as a whole, which may hold anything (`.env`, `.git`, a settings file). The import path is
    the folders those agents' packages sit in, and the link trees.
    """
    prefixes = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()]
    roots = list(prefixes)
    python_path: list[Path] = []
    for entry in sys.path:
        path = Path(entry).resolve() if entry else None
        if path is not None and path.name.startswith("__editable__") and path.is_dir():
            roots += [path, *_link_targets(path)]
            python_path.append(path)
    for module in agent_modules:
        top = module.partition(".")[0]
        # The top-level name only: finding a submodule would run its parent package's code.
        spec = importlib.util.find_spec(top) if top else None
        if spec is None or spec.origin in (None, "built-in", "frozen"):
            continue
        origin = Path(spec.origin).resolve()
        place = origin.parent if spec.submodule_search_locations is not None else origin
        if any(place.is_relative_to(root) for root in roots):
            continue
        roots.append(place)
        python_path.append(place.parent)
    return _outermost(roots), list(dict.fromkeys(python_path))


def _link_targets(directory: Path) -> list[Path]:
    """Folders that links in an editable install's link tree point to (one level of packages)."""
    if not directory.name.startswith("__editable__"):
        return []
    targets = []
    for link in directory.rglob("*"):
        if link.is_symlink():
            targets.append(link.resolve().parent)
    return targets


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another of them, sorted."""
    unique = sorted(set(paths), key=lambda path: len(path.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return sorted(kept)


@functools.cache
def seccomp_shortfall() -> str | None:
    """Why children run without the seccomp filter here, or None if they have it (logged once)."""
    try:
        seccomp.program()
        seccomp.program(single_process=True)
    except seccomp.SeccompUnavailable as exc:
        log.warning("confined children run WITHOUT a seccomp filter: %s", exc)
        return str(exc)
    return None


@contextmanager
def seccomp_fd(single_process: bool = False) -> Iterator[int | None]:
    """The filter to hand one bubblewrap start (`pass_fds`), or None where there is none.

    `single_process`: the child may start threads but no process (`seccomp`).
    """
    if seccomp_shortfall() is not None:
        yield None
        return
    with seccomp.program_fd(single_process) as descriptor:
        yield descriptor


def bwrap_argv(
    roots: Sequence[Path],
    hidden: Sequence[Path],
    environment: dict[str, str],
    seccomp_fd: int | None = None,
) -> list[str]:
    """Bubblewrap's arguments: `roots` read-only, `hidden` masked, only `environment` set.

    The command that follows them runs as `nobody` with no capabilities. As root, bubblewrap
    sets the namespaces up and `setpriv` then drops to the real, unprivileged uid (a user
    namespace would leave it root outside, mapped); as anyone else, bubblewrap's own user
    namespace maps the caller's uid to `nobody` inside. With `seccomp_fd` (passed to the
    child), bubblewrap installs that filter before it starts the command.
    """
    bwrap = bwrap_path()
    if bwrap is None:
        raise FileNotFoundError("bubblewrap (bwrap) is not installed")
    argv = [bwrap, "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        argv += ["--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all", "--uid", str(NOBODY), "--gid", str(NOBODY)]
        argv += ["--cap-drop", "ALL"]
    argv += ["--clearenv"]
    for system in SYSTEM:
        if os.path.exists(system):
            argv += ["--ro-bind", system, system]
    # A small /tmp of its own (a tmpfs's pages are the machine's memory, not the child's),
    # mounted before the binds: a root under /tmp (a checkout there) is bound on top of it.
    argv += ["--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/tmp")}
    for root in roots:
        if any(root.is_relative_to(system) for system in SYSTEM):
            continue
        # Folders on the way are made world-readable, so `nobody` reaches the bound one
        # even where the real one is not (root's home).
        for parent in reversed(root.parents[:-1]):
            if parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", str(root), str(root)]
    for path in hidden:
        resolved = path.resolve()
        if resolved.is_dir() and any(resolved.is_relative_to(root) for root in roots):
            argv += ["--tmpfs", str(resolved)]
        elif resolved.is_file() and any(resolved.is_relative_to(root) for root in roots):
            argv += ["--ro-bind", "/dev/null", str(resolved)]
    # Its /proc read-only: among what agent code could write there is its own session group's
    # nice, its CPU weight where there are no cgroups (`pool_limits.SessionWeight`).
    argv += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev", "--chdir", "/tmp"]
    for name, value in environment.items():
        argv += ["--setenv", name, value]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv.append("--")
    if os.geteuid() == 0:
        argv += [
            shutil.which("setpriv") or "/usr/bin/setpriv",
            f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip
    return argv


@functools.cache
def bwrap_works() -> str | None:
    """None if bubblewrap confines a process here, else why not (checked once per process)."""
    if bwrap_path() is None:
        return "bubblewrap (bwrap) is not installed"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv (util-linux), which drops root's uid in the child, is not installed"
    try:
        with seccomp_fd() as descriptor:
            argv = bwrap_argv([], [], {}, descriptor)
            probe = subprocess.run(
                [*argv, "/bin/sh", "-c", "id -u"],
                capture_output=True,
                text=True,
                timeout=10,
                pass_fds=() if descriptor is None else (descriptor,),
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap did not run: {exc}"
    if probe.returncode != 0 or probe.stdout.strip() != str(NOBODY):
        return f"bubblewrap failed here: {probe.stderr.strip() or probe.stdout.strip()}"
    return None


def report(mode: str, shared_unconfined: bool = False) -> tuple[bool, str]:
    """Whether agent code is confined on this host under `[isolation] mode`, in words."""
    if mode == "in_process":
        return False, "AGENT CODE IS NOT CONFINED: [isolation] mode = 'in_process' runs it in " \
            "the agent worker's own process"  # fmt: skip
    shortfall = "[isolation] mode = 'process'" if mode == "process" else bwrap_works()
    if shortfall is None:
        filtered = "seccomp" if seccomp_shortfall() is None else "NO SECCOMP FILTER"
        return (
            True,
            f"agent code confined per pool (bubblewrap: no network, uid nobody, {filtered})",
        )
    if mode == "bwrap":
        return False, f"AGENT WORKERS WILL NOT START: mode 'bwrap' but {shortfall}"
    one = "several pools share a process" if shared_unconfined else "one pool per host"
    return False, f"AGENT CODE IS NOT CONFINED ({shortfall}): {one}"
