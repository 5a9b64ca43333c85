"""What a pool's host lets an agent run ask of Temporal: each command checked against the run.

Agent code controls everything its confined child answers, so the host reads each completion
as a hostile client's request. A command passes only if kernos's own dispatcher could have
made it for this run, as the kernel admitted it (`RunInput`, from the run's first event):
- activities are syscalls from the table, on the queue the table names (the kernel's, the
  run's model pools, its registered tools'), at the run's priority and fairness, with the
  table's timeouts and retry policy, and a summary that is the syscall's own;
- continuing as new keeps the workflow type, the task queue and the admitted input (only the
  state the run carries changes);
- search attributes: the run's status, to one of kernos's values;
- timers, patches, cancelling its own activities and timers, answering queries and updates,
  and ending the run are its own business.
Everything else (child workflows, signals or cancellations aimed at other runs, local
activities, Nexus operations, memos) is refused: the host fails the run with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import temporalio.api.common.v1
from google.protobuf.duration_pb2 import Duration
from pydantic import ValidationError
from temporalio.bridge.proto.workflow_commands import (
    ActivityCancellationType,
    CompleteWorkflowExecution,
    ContinueAsNewWorkflowExecution,
    FailWorkflowExecution,
    ScheduleActivity,
    UpsertWorkflowSearchAttributes,
    WorkflowCommand,
)

from kernos.kernel import scheduler, visibility
from kernos.kernel.syscall_table import AGENT_RUN, RUN_FINISH, SYSCALLS, Syscall, retry_policy
from kernos.kernel.syscalls import RunInput

#: Values of the status search attribute that kernos's own code sets.
STATUSES = frozenset({"running", "awaiting-approval", "completed", "failed", "cancelled"})
#: The longest summary an activity may show in the Temporal UI (a storage path is 1,024 bytes).
MAX_SUMMARY = 2000

_HARMLESS = frozenset(
    {
        "start_timer",
        "cancel_timer",
        "request_cancel_activity",
        "respond_to_query",
        "update_response",
        "set_patch_marker",
        "cancel_workflow_execution",
    }
)
#: How a run's result is encoded: RunResult is JSON, and a client decodes nothing else.
_RESULT_ENCODING = b"json/plain"


#: How a syscall may be cancelled: answered at once, or once the kernel has stopped it.
_CANCELLATION_TYPES = frozenset(
    {ActivityCancellationType.TRY_CANCEL, ActivityCancellationType.WAIT_CANCELLATION_COMPLETED}
)


class CommandCheck:
    """Checks the commands of one run against what the kernel admitted."""

    def __init__(self, run: RunInput, task_queue: str) -> None:
        self.run = run
        self.task_queue = task_queue
        self._priority = _proto(scheduler.priority_of(run.spec, run.scheduling)._to_proto())
        self._retry = temporalio.api.common.v1.RetryPolicy()
        retry_policy(run.limits).apply_to_proto(self._retry)

    def refusal(self, commands: Sequence[WorkflowCommand]) -> str | None:
        """Why one of `commands` may not go to Temporal, or None if all may."""
        for command in commands:
            kind = command.WhichOneof("variant")
            if kind is None:
                return "an empty command"
            checks: dict[str, Callable[[Any], str | None]] = {
                "schedule_activity": self._activity,
                "continue_as_new_workflow_execution": self._continue_as_new,
                "upsert_workflow_search_attributes": self._search_attributes,
                "complete_workflow_execution": self._completion,
                "fail_workflow_execution": self._failure,
            }
            check = checks.get(kind)
            if check is None and kind not in _HARMLESS:
                return f"{kind}: agent runs may not do this"
            reason = check(getattr(command, kind)) if check is not None else None
            if reason is None and command.HasField("user_metadata"):
                reason = self._metadata(kind, command)
            if reason is not None:
                return reason
        return None

    def _activity(self, command: ScheduleActivity) -> str | None:
        name = command.activity_type
        syscall = SYSCALLS.get(name)
        if syscall is None:
            return f"activity {name[:80]!r} is not a syscall"
        what = f"syscall {name}"
        if name == RUN_FINISH.name and not self.run.reports_end:
            return f"{what}: the kernel learns how this run ends from Temporal, not from the run"
        if not self._queue_allowed(syscall, command.task_queue):
            return f"{what} on task queue {command.task_queue[:120]!r}, not its own"
        if _proto(command.priority) != self._priority:
            return f"{what} at a priority or fairness other than the run's"
        limits = self.run.limits
        if _seconds(command.start_to_close_timeout) != syscall.start_to_close(limits):
            return f"{what} with a start-to-close timeout other than the table's"
        heartbeat = syscall.heartbeat(limits) or timedelta(0)
        if _seconds(command.heartbeat_timeout) != heartbeat:
            return f"{what} with a heartbeat timeout other than the table's"
        if command.HasField("schedule_to_close_timeout"):
            return f"{what} with a schedule-to-close timeout the table does not set"
        affinity = "@" in command.task_queue
        expected = timedelta(seconds=self.run.scheduling.affinity_s) if affinity else timedelta(0)
        if _seconds(command.schedule_to_start_timeout) != expected:
            return f"{what} with a schedule-to-start timeout other than the run's affinity"
        if command.retry_policy != self._retry:
            return f"{what} with a retry policy other than the table's"
        if len(command.arguments) != 1:
            return f"{what} with {len(command.arguments)} arguments, not its one request"
        if command.cancellation_type not in _CANCELLATION_TYPES:
            # Abandoned, it would look answered to the run while it still ran: uncounted. (An
            # unknown value is TRY_CANCEL to Temporal's core: it is refused as well.)
            return f"{what} with cancellation type {command.cancellation_type}, not one allowed"
        return None

    def _queue_allowed(self, syscall: Syscall[Any, Any], queue: str) -> bool:
        run = self.run
        if syscall.queue == "kernel":
            return queue == run.kernel_task_queue
        if syscall.queue == "llm":
            if not queue.startswith(run.llm_queue_prefix):
                return False
            model, _, instance = queue[len(run.llm_queue_prefix) :].partition("@")
            return _safe(model) and (not instance or _safe(instance))
        served = queue.removeprefix(run.tool_queue_prefix)
        return queue.startswith(run.tool_queue_prefix) and (
            served in run.tools or served in run.mcp_servers
        )

    def _continue_as_new(self, command: ContinueAsNewWorkflowExecution) -> str | None:
        if command.workflow_type not in ("", AGENT_RUN):
            return f"continuing as workflow type {command.workflow_type[:80]!r}"
        if command.task_queue not in ("", self.task_queue):
            return f"continuing as new on task queue {command.task_queue[:120]!r}"
        if command.memo or command.search_attributes.indexed_fields or command.headers:
            return "continuing as new with a memo, headers or search attributes of its own"
        if command.HasField("retry_policy") or any(
            command.HasField(field)
            for field in ("workflow_run_timeout", "workflow_task_timeout", "backoff_start_interval")
        ):
            return "continuing as new with timeouts, a delay or a retry policy of its own"
        if len(command.arguments) != 1:
            return "continuing as new without the run's input"
        try:
            carried = RunInput.model_validate_json(command.arguments[0].data)
        except ValidationError:
            return "continuing as new with an input that is not a run's"
        if carried.model_dump(exclude={"carried"}) != self.run.model_dump(exclude={"carried"}):
            return "continuing as new with an input other than the one the kernel admitted"
        return None

    def _completion(self, command: CompleteWorkflowExecution) -> str | None:
        if command.HasField("result") and (
            command.result.metadata.get("encoding") != _RESULT_ENCODING
        ):
            return "completing the run with a result that is not JSON"
        return None

    def _failure(self, command: FailWorkflowExecution) -> str | None:
        # Recorded as the run's end, a termination, cancellation or timeout would be believed:
        # those are Temporal's (an operator's, a deadline's) to record, never the run's.
        kind = command.failure.WhichOneof("failure_info")
        if kind != "application_failure_info":
            return f"failing the run with a failure of kind {kind}, not an error of its own"
        return None

    def _search_attributes(self, command: UpsertWorkflowSearchAttributes) -> str | None:
        fields = command.search_attributes.indexed_fields
        for name, payload in fields.items():
            if name != visibility.STATUS.name:
                return f"setting search attribute {name[:80]!r}"
            if json_scalar(payload.data) not in STATUSES:
                return f"setting {name} to a value that is not a run status"
        return None

    def _metadata(self, kind: str, command: WorkflowCommand) -> str | None:
        metadata = command.user_metadata
        if kind != "schedule_activity" or metadata.HasField("details"):
            return f"{kind} with a summary or details of its own"
        summary = json_scalar(metadata.summary.data)
        name = command.schedule_activity.activity_type
        if not (
            isinstance(summary, str)
            and (summary == name or summary.startswith(name + " "))
            and len(summary) <= MAX_SUMMARY
            and "\n" not in summary
        ):
            return f"syscall {name} with a summary that is not the syscall's"
        return None


def json_scalar(data: bytes) -> object:
    """A payload's JSON value, or None if it is none (a hashable answer either way)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, str | int | float | bool) else None


def _safe(name: str) -> bool:
    return (
        0 < len(name) <= 64 and name[0].isalnum() and all(c.isalnum() or c in "._-" for c in name)
    )


def _seconds(duration: Duration) -> timedelta:
    return duration.ToTimedelta()


def _proto(priority: temporalio.api.common.v1.Priority) -> tuple[int, str, float]:
    return priority.priority_key, priority.fairness_key, priority.fairness_weight
