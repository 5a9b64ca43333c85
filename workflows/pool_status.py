"""What each agent host says of its pools, for `kernos status`: a file per host, kept fresh.

A host writes its report (pools, their processes, runs, age, memory, restarts, workflow
tasks) every few seconds into the state directory's `pools/` folder, which no pool's child can
see, and removes it when it stops; `kernos status` reads the reports that are fresh. A host
that died leaves a stale report, which is not shown.
"""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ValidationError

#: How often a host rewrites its report, and how old a report may be and still be shown.
EVERY_S = 5.0
FRESH_S = 30.0


class PoolState(BaseModel):
    """One pool on a host."""

    pool: str
    pid: int | None
    """Its process (bubblewrap's, where confined); None once it ended."""
    runs: int
    """Runs the host holds in its cache for this pool now."""
    age_s: float
    idle_s: float
    """Since its process last answered an activation."""
    memory_bytes: int | None
    """What its process uses now, where its cgroup counts it."""
    restarts: int
    """How often its process ended unasked in the last few minutes."""
    tasks: int = 0
    """Workflow tasks of its runs running on the host now."""
    turned_back: int = 0
    """Workflow tasks turned back, or given back, since the host started: the pool was over its
    share of the slots while others waited."""


class HostPools(BaseModel):
    """One agent host's report."""

    host: str
    pid: int
    updated: datetime
    confined: bool
    limited: bool
    """Whether its pools have cgroups (memory, processes, CPU) of their own."""
    pools: list[PoolState]


def report_path(directory: Path) -> Path:
    """Where this host's report goes."""
    return directory / "pools" / f"{socket.gethostname()}-{os.getpid()}.json"


def publish(directory: Path, report: HostPools) -> None:
    """Write the report whole (a reader never sees half of one); nothing without a state dir."""
    if not directory.is_dir():
        return
    path = report_path(directory)
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(report.model_dump_json())
    partial.replace(path)


def withdraw(directory: Path) -> None:
    """Remove this host's report: it stopped."""
    with contextlib.suppress(FileNotFoundError):
        report_path(directory).unlink()


def fresh_reports(directory: Path) -> list[HostPools]:
    """The reports of the hosts that wrote one lately."""
    reports = []
    oldest = datetime.now(UTC) - timedelta(seconds=FRESH_S)
    for path in sorted((directory / "pools").glob("*.json")):
        try:
            report = HostPools.model_validate_json(path.read_text())
        except (OSError, ValidationError):
            continue
        if report.updated >= oldest:
            reports.append(report)
    return reports
