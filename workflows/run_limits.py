"""How much one run may hold: its pending syscalls and timers, its history, its payloads.

A run's code can go around the SDK, which keeps an honest run inside its limits
(`SyscallLimits`, fixed at admission), and schedule syscalls or timers by the thousand, or make
its history grow until Temporal terminates it (51,200 events or 50 MiB, with no outcome
recorded) or refuses its payloads (2 MiB) and retries its workflow task for ever. A pool's
host sees every job Temporal sends a run and every command the run's code answers, so it
keeps the count itself, and fails a run that goes past a limit, naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_commands import ActivityCancellationType, WorkflowCommand

from kernos.kernel.syscalls import SyscallLimits

#: The error type of a run that went past one of its limits.
RUN_LIMIT = "RunLimitExceeded"
#: A workflow task's commands travel in one gRPC message, which Temporal takes up to 4 MiB.
MAX_COMPLETION_BYTES = 4 * 2**20 - 64 * 2**10
#: The most events one command adds to the history (an activity: scheduled, started, closed).
_EVENTS_PER_COMMAND = 3
#: Events each workflow task adds (scheduled, started, completed).
_EVENTS_PER_TASK = 3
#: What a command may carry besides its payloads' data (their metadata, names, options).
_COMMAND_ENVELOPE = 64 * 2**10


class RunBounds:
    """One run's pending syscalls and timers, counted from what passes the host."""

    def __init__(self, limits: SyscallLimits, left_running: Sequence[float] = ()) -> None:
        self.limits = limits
        #: When the syscalls the run's earlier executions left running have surely stopped.
        self._left_running = list(left_running)
        #: Pending syscall -> whether it is answered as soon as it is cancelled, and how long an
        #: attempt of it may run.
        self._activities: dict[int, tuple[bool, float]] = {}
        #: Syscall answered when cancelled -> when (workflow time) it has surely stopped.
        self._cancelled: dict[int, float] = {}
        self._timers: set[int] = set()

    @property
    def pending(self) -> tuple[int, int]:
        """Syscalls and timers the run has (syscalls it cancelled or left running, counted)."""
        syscalls = len(self._activities) + len(self._cancelled) + len(self._left_running)
        return syscalls, len(self._timers)

    def arrived(self, act: WorkflowActivation) -> None:
        """Forget the syscalls and timers the activation resolves."""
        now = _workflow_time(act)
        self._cancelled = {seq: ends for seq, ends in self._cancelled.items() if ends > now}
        self._left_running = [ends for ends in self._left_running if ends > now]
        for job in act.jobs:
            if job.HasField("resolve_activity"):
                self._activities.pop(job.resolve_activity.seq, None)
            elif job.HasField("fire_timer"):
                self._timers.discard(job.fire_timer.seq)

    def left_running(self, act: WorkflowActivation) -> list[float]:
        """When each syscall still counted has surely stopped, as the run continues as new.

        A closed execution's syscalls are answered to no one, but the kernel runs each until
        it ends (only generations heartbeat and learn sooner): the next execution counts them.
        """
        now = _workflow_time(act)
        return [
            *(now + start_to_close_s for _, start_to_close_s in self._activities.values()),
            *self._cancelled.values(),
            *self._left_running,
        ]

    def answered(
        self, act: WorkflowActivation, commands: Sequence[WorkflowCommand], size: int
    ) -> str | None:
        """Count what `commands` (`size` bytes in all) start; why they break a limit, if so."""
        limits = self.limits
        for command in commands:
            kind = command.WhichOneof("variant")
            if kind == "schedule_activity":
                schedule = command.schedule_activity
                if schedule.seq in self._activities or schedule.seq in self._cancelled:
                    return "a syscall scheduled under the number of one still pending"
                self._activities[schedule.seq] = (
                    # (Whatever is not a wait for the kernel is answered at once by Temporal.)
                    schedule.cancellation_type
                    != ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    schedule.start_to_close_timeout.ToTimedelta().total_seconds(),
                )
            elif kind == "request_cancel_activity":
                # Cancelled so, a syscall is answered at once, while the kernel may still run
                # it (cancellation reaches an attempt only at a heartbeat): a run could cancel
                # and schedule again without end. It counts until its attempt's time is up.
                seq = command.request_cancel_activity.seq
                answered_at_once, start_to_close_s = self._activities.get(seq, (False, 0.0))
                if answered_at_once:
                    del self._activities[seq]
                    self._cancelled[seq] = _workflow_time(act) + start_to_close_s
            elif kind == "start_timer":
                if command.start_timer.seq in self._timers:
                    return "a timer started under the number of one still running"
                self._timers.add(command.start_timer.seq)
            elif kind == "cancel_timer":
                self._timers.discard(command.cancel_timer.seq)
            for what, payload in _payloads(command):
                if len(payload.data) > limits.max_payload_bytes:
                    return _over(
                        f"{what} is {len(payload.data)} bytes",
                        limits.max_payload_bytes, "payload_bytes",
                    )  # fmt: skip
            # Whatever else it carries (a payload's metadata, a failure's message, details).
            if command.ByteSize() > limits.max_payload_bytes + _COMMAND_ENVELOPE:
                return _over(
                    f"a {kind} command is {command.ByteSize()} bytes",
                    limits.max_payload_bytes, "payload_bytes",
                )  # fmt: skip
        activities, timers = self.pending
        if activities > limits.max_pending_syscalls:
            return _over(
                f"the run has {activities} syscalls pending",
                limits.max_pending_syscalls, "pending_syscalls",
            )  # fmt: skip
        if timers > limits.max_pending_timers:
            return _over(
                f"the run has {timers} timers pending", limits.max_pending_timers, "pending_timers"
            )
        if size > MAX_COMPLETION_BYTES:
            return (
                f"one workflow task's commands are {size} bytes, over the {MAX_COMPLETION_BYTES} "
                "bytes Temporal takes in one message"
            )
        recorded = [c for c in commands if c.WhichOneof("variant") != "respond_to_query"]
        if not recorded:
            # Answering a query writes nothing to the history.
            return None
        events = act.history_length + _EVENTS_PER_TASK + _EVENTS_PER_COMMAND * len(recorded)
        if events > limits.max_history_events:
            return _over(
                f"the run's history would reach {events} events",
                limits.max_history_events, "history_events",
            )  # fmt: skip
        history_bytes = act.history_size_bytes + size
        if history_bytes > limits.max_history_bytes:
            return _over(
                f"the run's history would reach {history_bytes} bytes",
                limits.max_history_bytes, "history_bytes",
            )  # fmt: skip
        return None


def _payloads(command: WorkflowCommand) -> Iterable[tuple[str, Payload]]:
    """The payloads a command puts in the run's history, each named."""
    kind = command.WhichOneof("variant")
    if kind == "schedule_activity":
        name = command.schedule_activity.activity_type
        for payload in command.schedule_activity.arguments:
            yield f"a request of syscall {name[:80]}", payload
    elif kind == "complete_workflow_execution":
        if command.complete_workflow_execution.HasField("result"):
            yield "the run's result", command.complete_workflow_execution.result
    elif kind == "continue_as_new_workflow_execution":
        for payload in command.continue_as_new_workflow_execution.arguments:
            yield "the state the run carries on", payload
    elif kind == "update_response" and command.update_response.HasField("completed"):
        yield "an update's answer", command.update_response.completed


def _workflow_time(act: WorkflowActivation) -> float:
    """The activation's time as Temporal gives it (not the pool's clock, not the code's)."""
    return act.timestamp.seconds + act.timestamp.nanos / 1e9


def _over(what: str, limit: int, setting: str) -> str:
    return f"{what}, over the limit of {limit} ([limits] max_{setting})"
