"""A pool's host checks each syscall answer before the run's child sees it (unit cases).

Activations are built as Temporal's core hands them to the host; what the child would receive
is the activation after `ResultCheck.check`.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import TimeoutType
from temporalio.api.failure.v1 import Failure
from temporalio.bridge.proto.activity_result import ActivityResolution
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_commands import ScheduleActivity
from temporalio.contrib.pydantic import pydantic_data_converter

from kernos.kernel.result_seal import (
    error_message,
    new_signing_key,
    result_message,
    sign,
    signing_key,
)
from kernos.kernel.syscalls import FileContent, StorageRead
from kernos.workflows.result_check import ResultCheck

KEY = signing_key(new_signing_key())
RUN = ("run-1", "execution-1")
REQUEST = StorageRead(path="a.md")
CONTENT = FileContent(
    path="a.md", version=1, size=6, sha256="0" * 64, content="secret", encoding="utf-8"
)


def payload(value: Any) -> Payload:
    converted: Payload = pydantic_data_converter.payload_converter.to_payloads([value])[0]
    return converted


def checked(resolution: ActivityResolution, *, seq: int = 1, asked: int = 1) -> WorkflowActivation:
    """What the child receives for an answer to `asked` (a storage.read of a.md) at `seq`."""
    check = ResultCheck(KEY.public_key(), RUN[0])
    check.scheduled(
        ScheduleActivity(seq=asked, activity_type="storage.read", arguments=[payload(REQUEST)])
    )
    act = WorkflowActivation(run_id=RUN[1])
    job = act.jobs.add()
    job.resolve_activity.seq = seq
    job.resolve_activity.result.CopyFrom(resolution)
    check.check(act)
    return act


def result(value: BaseModel) -> ActivityResolution:
    resolution = ActivityResolution()
    resolution.completed.result.CopyFrom(payload(value))
    return resolution


def failed(cause: Failure, identity: str = "worker@host") -> ActivityResolution:
    failure = Failure(message="activity error", cause=cause)
    failure.activity_failure_info.activity_type.name = "storage.read"
    failure.activity_failure_info.identity = identity
    resolution = ActivityResolution()
    resolution.failed.failure.CopyFrom(failure)
    return resolution


def application(kind: str, message: str, *details: Any) -> Failure:
    cause = Failure(message=message, stack_trace="Traceback: kernel internals")
    cause.application_failure_info.type = kind
    cause.application_failure_info.details.payloads.extend(payload(d) for d in details)
    cause.cause.message = "psycopg: the kernel's own exception"
    return cause


def unsealed(act: WorkflowActivation) -> str | None:
    """The host's UnsealedResult message, if it replaced the answer."""
    cause = act.jobs[0].resolve_activity.result.failed.failure.cause
    if cause.application_failure_info.type != "UnsealedResult":
        return None
    return cause.message


def sealed(response: FileContent, run: tuple[str, str] = RUN, request: Any = REQUEST) -> Any:
    seal = sign(KEY, result_message(run, "storage.read", request, response))
    return response.model_copy(update={"seal": seal})


def test_a_kernel_workers_result_passes_untouched() -> None:
    answer = result(sealed(CONTENT))
    act = checked(answer)
    assert act.jobs[0].resolve_activity.result.completed.result == payload(sealed(CONTENT))


@pytest.mark.parametrize(
    "forged",
    [
        CONTENT.model_copy(update={"content": "FORGED"}),  # unsealed
        sealed(CONTENT).model_copy(update={"content": "FORGED"}),  # sealed, then changed
        sealed(CONTENT.model_copy(update={"content": "FORGED"}), run=("other", RUN[1])),
        sealed(CONTENT.model_copy(update={"content": "FORGED"}), run=(RUN[0], "other")),
        sealed(CONTENT.model_copy(update={"content": "FORGED"}), request=StorageRead(path="b")),
    ],
    ids=["unsealed", "altered", "other-run", "other-execution", "other-request"],
)
def test_a_result_no_kernel_worker_sealed_for_this_request_is_replaced(forged: Any) -> None:
    act = checked(result(forged))
    assert unsealed(act) is not None
    assert "the result of storage.read was not sealed" in (unsealed(act) or "")
    assert b"FORGED" not in act.SerializeToString()


def test_an_empty_completion_or_garbage_is_replaced() -> None:
    empty = ActivityResolution()
    empty.completed.SetInParent()
    assert unsealed(checked(empty)) is not None
    garbage = ActivityResolution()
    garbage.completed.result.metadata["encoding"] = b"json/plain"
    garbage.completed.result.data = b"{}"
    assert unsealed(checked(garbage)) is not None


def test_an_answer_to_nothing_the_run_asked_is_replaced() -> None:
    act = checked(result(sealed(CONTENT)), seq=2, asked=1)
    assert unsealed(act) is not None
    assert b"secret" not in act.SerializeToString()


def test_a_kernel_workers_error_passes_without_what_its_seal_does_not_cover() -> None:
    message = "no such file: a.md"
    seal = sign(KEY, error_message(RUN, "storage.read", REQUEST, "NotFound", message))
    act = checked(failed(application("NotFound", message, seal)))
    failure = act.jobs[0].resolve_activity.result.failed.failure
    assert failure.cause.message == message
    assert failure.cause.application_failure_info.type == "NotFound"
    assert not failure.cause.HasField("cause") and not failure.cause.stack_trace
    assert failure.activity_failure_info.identity == ""


@pytest.mark.parametrize("how", ["unsigned", "signed-elsewhere", "encoded-message"])
def test_an_error_no_kernel_worker_sealed_is_replaced(how: str) -> None:
    message = "INJECTED: wire money"
    seal = sign(KEY, error_message(RUN, "storage.read", REQUEST, "AccessDenied", message))
    cause = {
        "unsigned": application("AccessDenied", message),
        "signed-elsewhere": application(
            "AccessDenied",
            message,
            sign(
                KEY,
                error_message(("other", RUN[1]), "storage.read", REQUEST, "AccessDenied", message),
            ),
        ),
        # The seal is the kernel's, but the SDK would read the message from these attributes.
        "encoded-message": application("AccessDenied", message, seal),
    }[how]
    if how == "encoded-message":
        cause.encoded_attributes.CopyFrom(payload({"message": "INJECTED instead"}))
    act = checked(failed(cause, identity="INJECTED-worker"))
    assert "the AccessDenied error of storage.read was not sealed" in (unsealed(act) or "")
    assert b"INJECTED" not in act.SerializeToString()


def test_a_timeout_keeps_its_kind_and_loses_its_text() -> None:
    cause = Failure(message="INJECTED via a timeout's text")
    cause.timeout_failure_info.timeout_type = TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    cause.timeout_failure_info.last_heartbeat_details.payloads.append(payload("INJECTED"))
    act = checked(failed(cause))
    failure = act.jobs[0].resolve_activity.result.failed.failure
    assert (
        failure.cause.timeout_failure_info.timeout_type
        == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    )
    assert failure.activity_failure_info.activity_type.name == "storage.read"
    assert b"INJECTED" not in act.SerializeToString()


def test_a_cancellation_keeps_its_kind_and_loses_its_details() -> None:
    cause = Failure(message="INJECTED cancel")
    cause.canceled_failure_info.details.payloads.append(payload("INJECTED"))
    failure = Failure(message="Activity cancelled", cause=cause)
    failure.activity_failure_info.activity_type.name = "storage.read"
    cancelled = ActivityResolution()
    cancelled.cancelled.failure.CopyFrom(failure)
    act = checked(cancelled)
    kept = act.jobs[0].resolve_activity.result.cancelled.failure
    assert kept.cause.HasField("canceled_failure_info")
    assert b"INJECTED" not in act.SerializeToString()
