"""What a pool's host counts of each run, and the limits it fails a run for (unit cases).

Commands and jobs are built as the host sees them: the commands the run's code answers, the
jobs Temporal sends. What the code itself believes it holds does not matter.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_commands import ActivityCancellationType, WorkflowCommand

from kernos import ConfigError, load_settings
from kernos.kernel.syscalls import SyscallLimits
from kernos.workflows.run_limits import MAX_COMPLETION_BYTES, RunBounds

LIMITS = SyscallLimits(
    max_pending_syscalls=3,
    max_pending_timers=2,
    continue_as_new_events=50,
    max_history_events=100,
    max_payload_bytes=65_536,
)


def activity(seq: int, size: int = 10) -> WorkflowCommand:
    command = WorkflowCommand()
    command.schedule_activity.seq = seq
    command.schedule_activity.activity_type = "storage.list"
    command.schedule_activity.arguments.append(Payload(data=b"x" * size))
    return command


def timer(seq: int) -> WorkflowCommand:
    command = WorkflowCommand()
    command.start_timer.seq = seq
    return command


def activation(
    *, resolved: tuple[int, ...] = (), fired: tuple[int, ...] = (), at: float = 0.0
) -> WorkflowActivation:
    act = WorkflowActivation(run_id="r", history_length=10, history_size_bytes=1000)
    act.timestamp.FromNanoseconds(int(at * 1e9))
    for seq in resolved:
        act.jobs.add().resolve_activity.seq = seq
    for seq in fired:
        act.jobs.add().fire_timer.seq = seq
    return act


def test_pending_syscalls_are_counted_until_answered() -> None:
    bounds = RunBounds(LIMITS)
    assert bounds.answered(activation(), [activity(1), activity(2), activity(3)], 100) is None
    bounds.arrived(activation(resolved=(1,)))
    assert bounds.answered(activation(), [activity(4)], 100) is None
    reason = bounds.answered(activation(), [activity(5)], 100)
    assert reason == (
        "the run has 4 syscalls pending, over the limit of 3 ([limits] max_pending_syscalls)"
    )


def cancelled_three(at: float) -> RunBounds:
    """Three syscalls, of 30 s attempts, cancelled at `at`: #1 answered once it stops, #2 and #3
    answered at once (`TRY_CANCEL`, the SDK's default)."""
    bounds = RunBounds(LIMITS)
    commands = [activity(seq) for seq in (1, 2, 3)]
    commands[
        0
    ].schedule_activity.cancellation_type = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
    for command in commands:
        command.schedule_activity.start_to_close_timeout.FromSeconds(30)
    assert bounds.answered(activation(at=at - 1), commands, 100) is None
    cancels = [WorkflowCommand() for _ in commands]
    for seq, cancel in enumerate(cancels, 1):
        cancel.request_cancel_activity.seq = seq
    assert bounds.answered(activation(at=at), cancels, 100) is None
    bounds.arrived(activation(at=at + 0.2, resolved=(2, 3)))
    return bounds


def test_a_syscall_answered_as_soon_as_cancelled_counts_until_its_attempt_is_up() -> None:
    bounds = cancelled_three(at=100)
    assert bounds.pending == (3, 0)
    reason = bounds.answered(activation(at=102), [activity(4)], 100)
    assert reason is not None and reason.startswith("the run has 4 syscalls pending")
    later = cancelled_three(at=100)
    later.arrived(activation(at=130.5, resolved=(1,)))
    assert later.pending == (0, 0)


def test_timers_are_counted_until_fired_or_cancelled() -> None:
    bounds = RunBounds(LIMITS)
    assert bounds.answered(activation(), [timer(1), timer(2)], 10) is None
    bounds.arrived(activation(fired=(1,)))
    cancel = WorkflowCommand()
    cancel.cancel_timer.seq = 2
    assert bounds.answered(activation(), [cancel, timer(3), timer(4)], 10) is None
    assert bounds.pending == (0, 2)
    reason = bounds.answered(activation(), [timer(5)], 10)
    assert reason is not None and "3 timers pending" in reason
    assert "[limits] max_pending_timers" in reason


def test_a_payload_over_the_limit_is_named() -> None:
    reason = RunBounds(LIMITS).answered(activation(), [activity(1, size=65_537)], 70_000)
    assert reason == (
        "a request of syscall storage.list is 65537 bytes, over the limit of 65536 "
        "([limits] max_payload_bytes)"
    )
    result = WorkflowCommand()
    result.complete_workflow_execution.result.data = b"y" * 70_000
    reason = RunBounds(LIMITS).answered(activation(), [result], 70_000)
    assert reason is not None and reason.startswith("the run's result is 70000 bytes")


def test_the_history_is_bounded_before_the_commands_reach_it() -> None:
    # 10 events so far, 3 for the task, at most 3 for each command: 22 fits in 100.
    assert RunBounds(LIMITS).answered(activation(), [activity(n) for n in range(3)], 10) is None
    upserts = [WorkflowCommand() for _ in range(30)]
    for command in upserts:
        command.upsert_workflow_search_attributes.SetInParent()
    reason = RunBounds(LIMITS).answered(activation(), upserts, 10)
    assert reason == (
        "the run's history would reach 103 events, over the limit of 100 "
        "([limits] max_history_events)"
    )
    over = SyscallLimits(max_history_bytes=2**20)
    big = RunBounds(over).answered(activation(), upserts[:1], 2**20)
    assert big is not None and "[limits] max_history_bytes" in big
    whole = RunBounds(SyscallLimits()).answered(activation(), [], MAX_COMPLETION_BYTES + 1)
    assert whole is not None and "bytes Temporal takes in one message" in whole


def test_a_step_agent_must_continue_before_its_history_limit() -> None:
    with pytest.raises(ValidationError, match="must be below max_history_events"):
        SyscallLimits(continue_as_new_events=500, max_history_events=400)


def test_a_resource_limit_over_the_payload_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[storage\] max_file_bytes .* max_payload_bytes"):
        load_settings(limits={"max_payload_bytes": 100_000})
    settings = load_settings(
        limits={"max_payload_bytes": 100_000},
        storage={"max_file_bytes": 100_000},
        max_task_bytes=50_000,
    )
    assert settings.limits.max_payload_bytes == 100_000


def test_a_number_reused_while_pending_and_what_a_command_carries_besides_payloads() -> None:
    bounds = RunBounds(LIMITS)
    assert bounds.answered(activation(), [activity(1), timer(1)], 10) is None
    assert bounds.answered(activation(), [activity(1)], 10) == (
        "a syscall scheduled under the number of one still pending"
    )
    assert RunBounds(LIMITS).answered(activation(), [timer(2), timer(2)], 10) == (
        "a timer started under the number of one still running"
    )
    failed = WorkflowCommand()
    failed.fail_workflow_execution.failure.message = "m" * (65_536 + 65_537)
    reason = RunBounds(LIMITS).answered(activation(), [failed], 140_000)
    assert reason is not None and reason.startswith("a fail_workflow_execution command is")


def test_answering_a_query_writes_no_history() -> None:
    full = WorkflowActivation(run_id="r", history_length=99, history_size_bytes=1000)
    answer = WorkflowCommand()
    answer.respond_to_query.query_id = "q"
    assert RunBounds(LIMITS).answered(full, [answer], 10) is None
    assert RunBounds(LIMITS).answered(full, [answer, timer(1)], 10) is not None


def test_syscalls_an_execution_leaves_running_count_in_the_next_one() -> None:
    # A run that continues as new leaves its pending syscalls to the kernel, answered to no one.
    bounds = RunBounds(LIMITS)
    commands = [activity(seq) for seq in (1, 2)]
    for command in commands:
        command.schedule_activity.start_to_close_timeout.FromSeconds(30)
    assert bounds.answered(activation(at=100), commands, 100) is None
    left = bounds.left_running(activation(at=101))
    assert left == [131.0, 131.0]
    following = RunBounds(LIMITS, left)
    assert following.pending == (2, 0)
    reason = following.answered(activation(at=102), [activity(1), activity(2)], 100)
    assert reason is not None and reason.startswith("the run has 4 syscalls pending")
    later = RunBounds(LIMITS, left)
    later.arrived(activation(at=131.5))
    assert later.pending == (0, 0)
