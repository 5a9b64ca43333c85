"""What each agent host says of its pools, for `kernos status`: kept fresh, in two places.

A host writes its report (pools, their processes, runs, age, memory, restarts, workflow
tasks) every few seconds into the state directory's `pools/` folder, which no pool's child can
see, and signals it to the `HostReports` workflow in Temporal, which `kernos status` reads on
any machine (`host_reports_workflow.py`); it removes both when it stops. A host that died
leaves a stale report, which is not shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ValidationError
from temporalio.client import Client

log = logging.getLogger(__name__)

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
    for path in sorted((directory / "pools").glob("*.json")):
        try:
            reports.append(HostPools.model_validate_json(path.read_text()))
        except (OSError, ValidationError):
            continue
    return _fresh(reports)


def _fresh(reports: list[HostPools]) -> list[HostPools]:
    """Those written in the last `FRESH_S` (by their host's clock)."""
    oldest = datetime.now(UTC) - timedelta(seconds=FRESH_S)
    return [report for report in reports if report.updated >= oldest]


class TemporalReports:
    """Signals this host's reports to the `HostReports` workflow, from any thread."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, workflow_id: str, task_queue: str
    ) -> None:
        self._client = client
        self._loop = loop
        self._workflow_id = workflow_id
        self._task_queue = task_queue

    def send(self, report: HostPools, *, withdraw: bool = False) -> None:
        """Signal `report` (or that it is withdrawn), waiting at most `EVERY_S`.

        Best effort: the next report replaces it.
        """
        signal = self._signal(report, withdraw)
        try:
            done = asyncio.run_coroutine_threadsafe(signal, self._loop)
        except RuntimeError:  # the loop is closed: the host is gone
            signal.close()
            return
        try:
            done.result(EVERY_S)
        except Exception as exc:  # noqa: BLE001 - Temporal out of reach, or slow
            # Not left to land later, after a newer report (or the withdrawal).
            done.cancel()
            log.warning("the pools' report could not be sent to Temporal: %s", exc)

    async def _signal(self, report: HostPools, withdraw: bool) -> None:
        await self._client.start_workflow(
            "HostReports",  # by name: the kernel's workers run it, not this host
            {"reports": []},
            id=self._workflow_id,
            task_queue=self._task_queue,
            start_signal="withdraw" if withdraw else "report",
            start_signal_args=[report],
        )


async def temporal_reports(client: Client, workflow_id: str) -> list[HostPools]:
    """The fresh reports the `HostReports` workflow holds (none where there is none)."""
    handle = client.get_workflow_handle(workflow_id)
    received = await handle.query("reports", result_type=list[dict[str, object]])
    return _fresh([HostPools.model_validate(each["report"]) for each in received])


def merged(*sources: list[HostPools]) -> list[HostPools]:
    """Each host's latest report, from whichever source had it."""
    latest: dict[tuple[str, int], HostPools] = {}
    for reports in sources:
        for report in reports:
            known = latest.get((report.host, report.pid))
            if known is None or report.updated > known.updated:
                latest[(report.host, report.pid)] = report
    return [latest[key] for key in sorted(latest)]
