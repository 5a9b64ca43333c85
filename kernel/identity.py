"""Who is calling: the identity of a syscall's caller.

It comes from Temporal's record of the activity and the kernel's record of the run, never from
anything the agent's code sends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kernos.kernel.access import Subject
from kernos.kernel.errors import AccessDenied, RunNotFound
from kernos.kernel.run_store import RunRecord, RunStore

FirstRunLookup = Callable[[str, str], Awaitable[str]]
"""(workflow id, execution run id) -> the first execution's run id of that chain."""


@dataclass(frozen=True)
class Caller:
    """A syscall's caller: who it is, and the run as the kernel admitted it."""

    subject: Subject
    record: RunRecord
    """The run's record when first resolved: what admission fixed, without its task or output
    (`RunRecord.admitted`); its status is not kept."""


class CallerDenied(AccessDenied):
    """A syscall from a workflow that is not (or no longer) a live admitted run."""

    def __init__(self, message: str, subject: Subject | None = None) -> None:
        super().__init__(message)
        #: The run's recorded identity, where there is a record, for the audit row.
        self.subject = subject


class IdentityResolver:
    """Maps an activity's workflow execution to the run record it belongs to."""

    def __init__(
        self, runs: RunStore, first_run_of: FirstRunLookup, *, cache_size: int = 10_000
    ) -> None:
        self._runs = runs
        self._first_run_of = first_run_of
        self._cache_size = cache_size
        # What admission fixed (tenant, user, agent, scheduling, limits) and the first execution
        # never change once bound, so a verified execution's caller is cached; whether the run is
        # still live is not cached: the audit statement checks it with every decision.
        self._callers: OrderedDict[tuple[str, str], Caller] = OrderedDict()

    async def resolve(self, workflow_id: str, execution_run_id: str) -> Caller:
        """The caller of a syscall, or CallerDenied naming why there is none."""
        key = (workflow_id, execution_run_id)
        known = self._callers.get(key)
        if known is not None:
            self._callers.move_to_end(key)
            return known
        try:
            record = await self._runs.get(workflow_id)
        except RunNotFound:
            raise CallerDenied(
                f"workflow {workflow_id!r} is not a run the kernel admitted"
            ) from None
        subject = Subject(
            run_id=record.run_id, tenant=record.tenant, user=record.user, agent=record.agent
        )
        first = await self._first_execution(workflow_id, execution_run_id, record)
        if first != record.first_execution_run_id:
            raise CallerDenied(
                f"workflow {workflow_id!r} execution {execution_run_id!r} does not belong to "
                f"the admitted run (first execution {record.first_execution_run_id!r})",
                subject,
            )
        if record.finished:
            raise CallerDenied(finished_message(record.run_id, record.status), subject)
        caller = self._callers[key] = Caller(subject, record.admitted())
        if len(self._callers) > self._cache_size:
            self._callers.popitem(last=False)
        return caller

    async def _first_execution(
        self, workflow_id: str, execution_run_id: str, record: RunRecord
    ) -> str:
        if execution_run_id == record.first_execution_run_id:
            return execution_run_id
        first = await self._first_run_of(workflow_id, execution_run_id)
        if record.first_execution_run_id is None:
            # The client that admitted the run has not bound it yet (a race with the first
            # syscall): Temporal's answer is authoritative, the workflow id being the kernel's.
            first = await self._runs.bind(workflow_id, first)
            record.first_execution_run_id = first
        return first


def finished_message(run_id: str, status: str) -> str:
    """Why a finished run's syscall is denied."""
    return f"run {run_id!r} is {status}; it makes no syscalls"
