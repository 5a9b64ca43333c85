"""The kernel learns that runs ended from Temporal, not from the runs themselves.

A run says nothing of its own end (runs begun before this version sent `run.finish`, agent
code's to send, or not, or with any output: a run its pool's host ended for a refused command
never sent it, and one that lied about its output would have been believed). The end is
recorded as Temporal has it, status, output or error, and audited (`run.end`, in the run's
tenant's chain), by whoever learns it first: a client that waited for the run's result
(`RunHandle.result`), or kernel workers following Temporal's visibility, which record every
agent run that closed (not to continue as new) since their last look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.exceptions import CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as RunTimedOut
from temporalio.service import RPCError

from kernos.kernel.access import Decision, Subject
from kernos.kernel.audit import AuditLog
from kernos.kernel.config import Settings
from kernos.kernel.db.pool import Pool
from kernos.kernel.run_store import RunStore
from kernos.kernel.syscall_table import AGENT_RUN, RUN_END
from kernos.kernel.syscalls import RunOutcome, RunResult

log = logging.getLogger(__name__)

#: How far back each look reaches past the last close it saw: visibility is eventually
#: consistent, and a close recorded late must not be missed.
OVERLAP = timedelta(seconds=30)
#: Closed runs checked against their records in one query.
_BATCH = 500
#: The record's status for each way Temporal closes a run.
_STATUS = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "cancelled",
}


def ended_as(failure: WorkflowFailureError) -> RunOutcome:
    """How a run that did not complete ended, from what waiting for its result raised."""
    cause = failure.cause
    if isinstance(cause, CancelledError):
        return RunOutcome(status="cancelled", error="cancelled")
    if isinstance(cause, TerminatedError):
        return RunOutcome(status="cancelled", error=f"terminated: {cause.message}")
    if isinstance(cause, RunTimedOut):
        return RunOutcome(status="failed", error="TimedOut: the run timed out")
    kind = getattr(cause, "type", None) or "Failed"
    return RunOutcome(status="failed", error=f"{kind}: {getattr(cause, 'message', cause)}")


async def record_and_audit_end(pool: Pool, run_id: str, outcome: RunOutcome) -> bool:
    """Record how Temporal says `run_id` ended, and audit it; False if it was recorded so.

    One transaction: an end is never recorded without its `run.end` row (nobody would add the
    row later, since the record would then agree with Temporal).
    """
    async with pool.connection() as conn, conn.transaction():
        record = await RunStore(pool).record_end(run_id, outcome, within=conn)
        if record is None:
            return False
        said = f"{outcome.status}" + (f": {outcome.error}" if outcome.error else "")
        if record.finished:
            said += f" (the run had said {record.status})"
        await AuditLog(pool).record_operator(
            Subject(run_id, record.tenant, record.user, record.agent),
            RUN_END.name,
            f"run:{run_id}",
            Decision(True, None, said[:1000].replace("\x00", "\ufffd")),
            within=conn,
        )
    return True


class RunEnds:
    """Records the end of every agent run on this kernel's queue as Temporal has it."""

    def __init__(self, pool: Pool, client: Client, settings: Settings) -> None:
        self._pool = pool
        self._runs = RunStore(pool)
        self._client = client
        self._queue = settings.temporal.agent_task_queue
        self._interval = settings.temporal.run_end_poll_s
        self._since = datetime.now(UTC) - timedelta(days=1)
        self._stop = asyncio.Event()

    async def look(self) -> int:
        """Record the runs that closed since the last look; how many records changed."""
        since = self._since
        query = (
            f"WorkflowType = '{AGENT_RUN}' AND TaskQueue = '{self._queue}' AND "
            f"ExecutionStatus != 'Running' AND CloseTime >= '{since.isoformat()}'"
        )
        changed = 0
        latest = since
        closed: list[WorkflowExecution] = []
        async for execution in self._client.list_workflows(query):
            if execution.close_time is not None:
                latest = max(latest, execution.close_time)
            if execution.status != WorkflowExecutionStatus.CONTINUED_AS_NEW:
                closed.append(execution)
            if len(closed) >= _BATCH:
                changed += await self._reconcile(closed)
                closed = []
        changed += await self._reconcile(closed)
        self._since = max(since, latest - OVERLAP)
        return changed

    async def _reconcile(self, closed: list[WorkflowExecution]) -> int:
        """Record the end of each run whose record says other than Temporal."""
        if not closed:
            return 0
        recorded = await self._runs.statuses([execution.id for execution in closed])
        changed = 0
        for execution in closed:
            said = recorded.get(execution.id)
            closed_as = _STATUS.get(execution.status) if execution.status else None
            if said is None or (said[0] == closed_as == "completed"):
                # Not this kernel's run; or it completed, as it said (what it returned is agent
                # code's word either way).
                continue
            try:
                outcome = await self._outcome(execution)
                if said == (outcome.status, outcome.error):
                    continue
                if await record_and_audit_end(self._pool, execution.id, outcome):
                    changed += 1
            except Exception:  # one run's history must not stop the others'
                log.exception("recording how run %s ended failed", execution.id)
        return changed

    async def _outcome(self, execution: WorkflowExecution) -> RunOutcome:
        handle = self._client.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=RunResult
        )
        try:
            result = await handle.result(follow_runs=False)
        except WorkflowFailureError as failure:
            return ended_as(failure)
        except Exception:  # noqa: BLE001 - what the run returned or failed with is agent code's
            closed_as = _STATUS.get(execution.status or WorkflowExecutionStatus.FAILED, "failed")
            if closed_as == "completed":
                return RunOutcome(status=closed_as, error="its result is not a run's result")
            return RunOutcome(status=closed_as, error="its failure could not be read")
        return RunOutcome(status="completed", output=result.output)

    async def run(self) -> None:
        """Look every `[temporal] run_end_poll_s`, until `stop`."""
        while not self._stop.is_set():
            try:
                await self.look()
            except (RPCError, OSError) as exc:
                log.warning("learning which runs ended failed (retried): %s", exc)
            except Exception:  # a failed look is retried next time; the worker goes on
                if self._stop.is_set():
                    return  # the worker shut down under it (its database pool closed)
                log.exception("learning which runs ended failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    def stop(self) -> None:
        """End `run` at its next wake-up."""
        self._stop.set()
