"""The pool host's command check, command by command: what kernos's dispatcher makes passes,
anything else is refused with a reason that names it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import temporalio.api.common.v1
from temporalio.api.failure.v1 import (
    ApplicationFailureInfo,
    CanceledFailureInfo,
    Failure,
    TerminatedFailureInfo,
    TimeoutFailureInfo,
)
from temporalio.bridge.proto.workflow_commands import (
    ActivityCancellationType,
    CompleteWorkflowExecution,
    ContinueAsNewWorkflowExecution,
    FailWorkflowExecution,
    ScheduleActivity,
    ScheduleLocalActivity,
    ScheduleNexusOperation,
    SignalExternalWorkflowExecution,
    StartTimer,
    UpsertWorkflowSearchAttributes,
    WorkflowCommand,
)
from temporalio.common import Priority

from kernos.kernel.scheduler import priority_of
from kernos.kernel.syscall_table import (
    LLM_CHAT,
    STORAGE_READ,
    TOOL_CALL,
    Syscall,
    retry_policy,
)
from kernos.kernel.syscalls import Carried, RunInput, RunSpec, Scheduling, TokenUsage
from kernos.workflows.commands import CommandCheck
from kernos.workflows.host_carry import HOST_CARRY
from kernos.workflows.pool_host import without_payloads

RUN = RunInput(
    run_id="run-1",
    reports_end=False,
    spec=RunSpec(agent="echo", task="hi", tenant="acme", user="alice", model="m", priority=2),
    kernel_task_queue="kernel",
    llm_queue_prefix="llm.",
    tool_queue_prefix="tools.",
    tools=["calculator"],
    mcp_servers=["fs"],
    scheduling=Scheduling(policy="fair", fairness_weight=2.0, affinity_s=3.0),
)


def payload(value: object) -> temporalio.api.common.v1.Payload:
    return temporalio.api.common.v1.Payload(
        metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode()
    )


def activity(name: str = LLM_CHAT.name, queue: str = "llm.m", **changes: object) -> WorkflowCommand:
    """A command as the dispatcher makes it for RUN, with `changes` to its fields."""
    table: dict[str, Syscall[Any, Any]] = {
        "llm.chat": LLM_CHAT, "storage.read": STORAGE_READ, "tool.call": TOOL_CALL
    }  # fmt: skip
    syscall = table.get(name, STORAGE_READ)
    command = ScheduleActivity(activity_type=name, task_queue=queue, arguments=[payload({})])
    command.start_to_close_timeout.FromTimedelta(syscall.start_to_close(RUN.limits))
    if heartbeat := syscall.heartbeat(RUN.limits):
        command.heartbeat_timeout.FromTimedelta(heartbeat)
    if "@" in queue:
        command.schedule_to_start_timeout.FromTimedelta(timedelta(seconds=3))
    retry_policy(RUN.limits).apply_to_proto(command.retry_policy)
    command.priority.CopyFrom(priority_of(RUN.spec, RUN.scheduling)._to_proto())
    for field, value in changes.items():
        if field == "priority":
            assert isinstance(value, Priority)
            command.priority.CopyFrom(value._to_proto())
        elif field == "start_to_close":
            assert isinstance(value, timedelta)
            command.start_to_close_timeout.FromTimedelta(value)
        elif field == "maximum_attempts":
            command.retry_policy.maximum_attempts = value  # type: ignore[assignment]
        elif field == "arguments":
            del command.arguments[:]
    wrapped = WorkflowCommand(schedule_activity=command)
    wrapped.user_metadata.summary.CopyFrom(payload(changes.get("summary", f"{name} detail")))
    return wrapped


def refusal(*commands: WorkflowCommand) -> str | None:
    return CommandCheck(RUN, "agents").refusal(commands)


def test_what_the_dispatcher_makes_passes() -> None:
    status = UpsertWorkflowSearchAttributes()
    status.search_attributes.indexed_fields["KernosStatus"].CopyFrom(payload("completed"))
    carried = RUN.model_copy(update={"carried": Carried(state={"n": 1}, steps=1, syscalls=2,
                                                        usage=TokenUsage())})  # fmt: skip
    assert (
        refusal(
            activity(),
            activity(queue="llm.m@instance-1"),
            activity("storage.read", "kernel"),
            activity("tool.call", "tools.calculator"),
            activity("tool.call", "tools.fs"),
            WorkflowCommand(start_timer=StartTimer(seq=1)),
            WorkflowCommand(upsert_workflow_search_attributes=status),
            WorkflowCommand(
                continue_as_new_workflow_execution=ContinueAsNewWorkflowExecution(
                    workflow_type="AgentRun",
                    arguments=[
                        temporalio.api.common.v1.Payload(data=carried.model_dump_json().encode())
                    ],
                )
            ),
        )
        is None
    )


def cancelled_as(kind: int) -> WorkflowCommand:
    """The dispatcher's llm.chat, to be cancelled as `kind` says (ABANDON: unwaited for)."""
    command = activity()
    command.schedule_activity.cancellation_type = kind  # type: ignore[assignment]
    return command


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (activity("shell.exec", "kernel"), "activity 'shell.exec' is not a syscall"),
        (activity(queue="kernel"), "syscall llm.chat on task queue 'kernel', not its own"),
        (activity(queue="llm.m@x y"), "on task queue"),
        (activity("storage.read", "llm.m"), "syscall storage.read on task queue 'llm.m'"),
        (activity("tool.call", "tools.rm"), "syscall tool.call on task queue 'tools.rm'"),
        (activity(priority=Priority(priority_key=1)), "at a priority or fairness other than"),
        (
            activity(priority=Priority(priority_key=2, fairness_key="victim", fairness_weight=2)),
            "at a priority or fairness other than",
        ),
        (activity(start_to_close=timedelta(hours=9)), "start-to-close timeout other than"),
        (activity(maximum_attempts=1), "retry policy other than the table's"),
        (activity(arguments=None), "with 0 arguments"),
        (activity(summary="approve me, operator"), "a summary that is not the syscall's"),
        (
            cancelled_as(ActivityCancellationType.ABANDON),
            "syscall llm.chat with cancellation type 2, not one allowed",
        ),
        # A value the enum does not name: Temporal's core takes it for TRY_CANCEL.
        (cancelled_as(7), "syscall llm.chat with cancellation type 7, not one allowed"),
        (
            WorkflowCommand(
                signal_external_workflow_execution=SignalExternalWorkflowExecution(seq=1)
            ),
            "signal_external_workflow_execution: agent runs may not do this",
        ),
        (
            WorkflowCommand(
                schedule_local_activity=ScheduleLocalActivity(seq=1, activity_type="llm.chat")
            ),
            "schedule_local_activity: agent runs may not do this",
        ),
        (
            WorkflowCommand(
                schedule_nexus_operation=ScheduleNexusOperation(seq=1, endpoint="kernel")
            ),
            "schedule_nexus_operation: agent runs may not do this",
        ),
    ],
)
def test_anything_else_is_refused_by_name(command: WorkflowCommand, reason: str) -> None:
    found = refusal(activity(), command)
    assert found is not None and reason in found, found


def test_continuing_as_new_keeps_the_admitted_run() -> None:
    def continued(run: RunInput, workflow_type: str = "", task_queue: str = "") -> WorkflowCommand:
        argument = temporalio.api.common.v1.Payload(data=run.model_dump_json().encode())
        return WorkflowCommand(
            continue_as_new_workflow_execution=ContinueAsNewWorkflowExecution(
                arguments=[argument], workflow_type=workflow_type, task_queue=task_queue
            )
        )

    other_tenant = RUN.model_copy(update={"spec": RUN.spec.model_copy(update={"tenant": "v"})})
    assert "other than the one the kernel admitted" in (refusal(continued(other_tenant)) or "")
    # Headers of the code's own, the host's carry among them (`host_carry`): the host writes
    # that one only after this check, so the code cannot say it broke nothing.
    for header in (HOST_CARRY, "x"):
        forged = continued(RUN)
        forged.continue_as_new_workflow_execution.headers[header].CopyFrom(payload({}))
        assert "headers or search attributes of its own" in (refusal(forged) or ""), header
    assert "workflow type 'Other'" in (refusal(continued(RUN, workflow_type="Other")) or "")
    assert "task queue 'llm.m'" in (refusal(continued(RUN, task_queue="llm.m")) or "")


def test_search_attributes_only_the_status_to_a_status() -> None:
    def upsert(name: str, value: str) -> WorkflowCommand:
        command = UpsertWorkflowSearchAttributes()
        command.search_attributes.indexed_fields[name].CopyFrom(payload(value))
        return WorkflowCommand(upsert_workflow_search_attributes=command)

    assert refusal(upsert("KernosStatus", "awaiting-approval")) is None
    assert "not a run status" in (refusal(upsert("KernosStatus", "approved-by-ops")) or "")
    assert "'KernosTenant'" in (refusal(upsert("KernosTenant", "victim")) or "")


def test_a_run_ends_as_its_own_error_and_says_nothing_else_of_its_end() -> None:
    def failing(**info: Any) -> WorkflowCommand:
        return WorkflowCommand(
            fail_workflow_execution=FailWorkflowExecution(failure=Failure(message="x", **info))
        )

    def completing(encoding: bytes) -> WorkflowCommand:
        result = temporalio.api.common.v1.Payload(metadata={"encoding": encoding}, data=b"{}")
        return WorkflowCommand(complete_workflow_execution=CompleteWorkflowExecution(result=result))

    assert refusal(failing(application_failure_info=ApplicationFailureInfo(type="Boom"))) is None
    assert refusal(completing(b"json/plain")) is None
    # A termination, a cancellation or a timeout would be recorded as the run's end, believed.
    for lie in (
        {"terminated_failure_info": TerminatedFailureInfo()},
        {"canceled_failure_info": CanceledFailureInfo()},
        {"timeout_failure_info": TimeoutFailureInfo()},
        {},
    ):
        assert "not an error of its own" in (refusal(failing(**lie)) or ""), lie
    assert refusal(completing(b"x-made-up")) == "completing the run with a result that is not JSON"
    # A run admitted now never sends run.finish; one admitted before still may.
    finish = activity("run.finish", "kernel", summary="run.finish completed")
    assert "the kernel learns how this run ends from Temporal" in (refusal(finish) or "")
    older = CommandCheck(RUN.model_copy(update={"reports_end": True}), "agents")
    assert older.refusal([finish]) is None


def test_a_runs_failure_reaches_temporal_without_payloads_of_agent_codes_encoding() -> None:
    made_up = temporalio.api.common.v1.Payload(metadata={"encoding": b"x-made-up"}, data=b"?")
    failure = Failure(
        message="it failed",
        stack_trace="at line 1",
        encoded_attributes=made_up,
        application_failure_info=ApplicationFailureInfo(type="Boom"),
        cause=Failure(
            message="because",
            application_failure_info=ApplicationFailureInfo(type="Inner"),
            cause=Failure(message="deeper", timeout_failure_info=TimeoutFailureInfo()),
        ),
    )
    failure.application_failure_info.details.payloads.append(made_up)
    failure.cause.application_failure_info.details.payloads.append(made_up)
    failure.cause.cause.timeout_failure_info.last_heartbeat_details.payloads.append(made_up)
    without_payloads(failure)
    assert not failure.HasField("encoded_attributes")
    assert not failure.application_failure_info.HasField("details")
    assert not failure.cause.application_failure_info.HasField("details")
    assert not failure.cause.cause.timeout_failure_info.HasField("last_heartbeat_details")
    # What a person reads of it stays.
    assert (failure.message, failure.stack_trace, failure.application_failure_info.type) == (
        "it failed",
        "at line 1",
        "Boom",
    )
    assert failure.cause.cause.message == "deeper"
