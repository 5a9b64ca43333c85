"""HostReports: what every agent host says of its pools, kept in Temporal for `kernos status`.

Agent hosts have no database (by design), and run on machines of their own: the one place
they all reach is Temporal. Each host signals its report here every few seconds, and
withdraws it when it stops; `kernos status`, on any machine, asks for them (a query, which
the Temporal UI can make too). It runs on the kernel's task queue, in kernel workers, and does
no I/O. A report is dropped once no newer one came from its host for `FRESH_S` (a host that
died withdraws nothing).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow

from kernos.workflows.long_lived import until_history_is_long

with workflow.unsafe.imports_passed_through():
    from kernos.workflows.pool_status import FRESH_S, HostPools

#: Signals one execution takes before it continues as new, carrying the reports.
SIGNALS_PER_EXECUTION = 1000


class ReceivedReport(BaseModel):
    """A host's latest report, and when this workflow had it (Temporal's clock)."""

    report: HostPools
    received: datetime


class HostReportsState(BaseModel):
    """What one execution hands the next."""

    reports: list[ReceivedReport] = []


@workflow.defn(name="HostReports")
class HostReports:
    """Keeps each host's latest report; continues as new to bound its history."""

    @workflow.init
    def __init__(self, carried: HostReportsState) -> None:
        self._reports = {_key(r.report): r for r in carried.reports}
        self._signals = 0

    @workflow.run
    async def run(self, carried: HostReportsState) -> None:
        """Wait for reports; hand the fresh ones to a new execution when the history grows."""
        await until_history_is_long(lambda: self._signals, SIGNALS_PER_EXECUTION)
        self._forget_stale()
        workflow.continue_as_new(HostReportsState(reports=list(self._reports.values())))

    @workflow.signal
    def report(self, report: HostPools) -> None:
        """A host's report, replacing its last."""
        self._signals += 1
        self._reports[_key(report)] = ReceivedReport(report=report, received=workflow.now())
        self._forget_stale()

    @workflow.signal
    def withdraw(self, report: HostPools) -> None:
        """The host stopped: its report goes."""
        self._signals += 1
        self._reports.pop(_key(report), None)

    @workflow.query
    def reports(self) -> list[ReceivedReport]:
        """Each host's latest report (the caller drops those older than `FRESH_S` by now)."""
        return sorted(self._reports.values(), key=lambda r: _key(r.report))

    def _forget_stale(self) -> None:
        oldest = workflow.now() - timedelta(seconds=FRESH_S)
        self._reports = {key: r for key, r in self._reports.items() if r.received >= oldest}


def _key(report: HostPools) -> str:
    return f"{report.host}:{report.pid}"
