"""What a pool's host lets reach a run's confined child from outside the run (unit cases).

Activations are built as Temporal's core hands them to the host; what the child receives is
the activation after `ActivationCheck.check`. The outsider is a rogue poller that answers
syscalls, or anyone with the namespace's credentials who signals, queries, updates or
cancels the run: whatever it sends, only what the host writes reaches the child.
"""

from __future__ import annotations

import json
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
from kernos.kernel.syscalls import ApprovalNotice, FileContent, RunOutcome, StorageRead
from kernos.workflows.activation_check import REFUSED_NAME, ActivationCheck

KEY = signing_key(new_signing_key())
RUN = ("run-1", "execution-1")
REQUEST = StorageRead(path="a.md")
CONTENT = FileContent(
    path="a.md", version=1, size=6, sha256="0" * 64, content="secret", encoding="utf-8"
)
ROGUE = b"ROGUE"


def payload(value: Any) -> Payload:
    converted: Payload = pydantic_data_converter.payload_converter.to_payloads([value])[0]
    return converted


def checked(
    resolution: ActivityResolution, *, seq: int = 1, asked: int = 1, syscall: str = "storage.read"
) -> WorkflowActivation:
    """What the child receives for an answer to `asked` (a storage.read of a.md) at `seq`."""
    check = ActivationCheck(KEY.public_key(), RUN[0])
    request = payload(REQUEST if syscall == "storage.read" else RunOutcome(status="completed"))
    check.scheduled(ScheduleActivity(seq=asked, activity_type=syscall, arguments=[request]))
    act = WorkflowActivation(run_id=RUN[1])
    job = act.jobs.add()
    job.resolve_activity.seq = seq
    job.resolve_activity.result.CopyFrom(resolution)
    check.check(act)
    return act


def completed(data: Payload) -> ActivityResolution:
    resolution = ActivityResolution()
    resolution.completed.result.CopyFrom(data)
    return resolution


def result(value: BaseModel) -> ActivityResolution:
    return completed(payload(value))


def failed(cause: Failure, identity: str = "worker@host") -> ActivityResolution:
    failure = Failure(message="activity error", cause=cause, source="ROGUE source")
    failure.activity_failure_info.activity_type.name = "storage.read"
    failure.activity_failure_info.identity = identity
    resolution = ActivityResolution()
    resolution.failed.failure.CopyFrom(failure)
    return resolution


def application(kind: str, message: str, *details: Any) -> Failure:
    cause = Failure(message=message, stack_trace="Traceback: kernel internals", source="ROGUE")
    cause.application_failure_info.type = kind
    cause.application_failure_info.details.payloads.extend(payload(d) for d in details)
    cause.application_failure_info.next_retry_delay.seconds = 123456
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


def test_a_kernel_workers_result_reaches_the_child_as_the_host_encodes_it() -> None:
    act = checked(result(sealed(CONTENT)))
    assert act.jobs[0].resolve_activity.result.completed.result == payload(CONTENT)


def test_nothing_but_the_sealed_fields_of_a_verified_result_passes() -> None:
    # A genuine seal, with what no seal covers added around it: an unknown field, a metadata
    # entry, the JSON's layout, the seal's hex in upper case.
    answer = sealed(CONTENT)
    data = payload(answer)
    text = data.data.decode().replace('"seal":"', '"rogue_extra":"ROGUE", "seal":"')
    data.data = text.replace(answer.seal, answer.seal.upper()).encode()
    data.metadata["exfil"] = ROGUE
    act = checked(completed(data))
    assert unsealed(act) is None
    assert act.jobs[0].resolve_activity.result.completed.result == payload(CONTENT)
    assert ROGUE not in act.SerializeToString()


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
    assert "the result of storage.read was not sealed" in (unsealed(act) or "")
    assert b"FORGED" not in act.SerializeToString()


def test_an_empty_completion_or_garbage_is_replaced() -> None:
    empty = ActivityResolution()
    empty.completed.SetInParent()
    assert unsealed(checked(empty)) is not None
    garbage = Payload(metadata={"encoding": b"json/plain"}, data=b"{}")
    assert unsealed(checked(completed(garbage))) is not None


def test_an_answer_with_nothing_to_seal_must_be_exactly_empty() -> None:
    honest = checked(completed(payload(None)), syscall="run.finish")
    assert unsealed(honest) is None
    for rogue in (
        Payload(metadata={"encoding": b"binary/null"}, data=ROGUE),
        Payload(metadata={"encoding": b"binary/null", "exfil": ROGUE}),
        Payload(metadata={"encoding": ROGUE}),
    ):
        act = checked(completed(rogue), syscall="run.finish")
        assert "the result of run.finish was not sealed" in (unsealed(act) or "")
        assert ROGUE not in act.SerializeToString()


def test_an_answer_to_nothing_the_run_asked_is_replaced() -> None:
    act = checked(result(sealed(CONTENT)), seq=2, asked=1)
    assert unsealed(act) is not None
    assert b"secret" not in act.SerializeToString()


def test_a_kernel_workers_error_passes_as_its_type_and_message_only() -> None:
    message = "no such file: a.md"
    seal = sign(KEY, error_message(RUN, "storage.read", REQUEST, "NotFound", message))
    act = checked(failed(application("NotFound", message, "ROGUE detail", seal), "ROGUE-worker"))
    failure = act.jobs[0].resolve_activity.result.failed.failure
    assert failure.cause.message == message
    assert failure.cause.application_failure_info.type == "NotFound"
    assert not failure.cause.application_failure_info.details.payloads
    assert not failure.cause.HasField("cause") and not failure.cause.stack_trace
    assert failure.activity_failure_info.activity_type.name == "storage.read"
    assert ROGUE not in act.SerializeToString()
    assert b"123456" not in act.SerializeToString() and b"psycopg" not in act.SerializeToString()


def test_a_kernel_errors_sealed_fields_pass_with_it_and_forged_ones_do_not() -> None:
    message = "the file 'a.md' is 60000 bytes, over the limit of 50000 bytes"
    fields = {"size": 60000, "limit": 50000}
    signed = error_message(RUN, "storage.read", REQUEST, "PayloadTooLarge", message, fields)
    seal = sign(KEY, signed)
    act = checked(failed(application("PayloadTooLarge", message, fields, seal)))
    cause = act.jobs[0].resolve_activity.result.failed.failure.cause
    assert cause.application_failure_info.type == "PayloadTooLarge"
    kept = cause.application_failure_info.details.payloads
    assert [json.loads(detail.data) for detail in kept] == [fields]
    forged = {"size": 1, "limit": 50000}
    act = checked(failed(application("PayloadTooLarge", message, forged, seal)))
    assert "the PayloadTooLarge error of storage.read was not sealed" in (unsealed(act) or "")


@pytest.mark.parametrize("how", ["unsigned", "signed-elsewhere", "encoded-message"])
def test_an_error_no_kernel_worker_sealed_is_replaced(how: str) -> None:
    message = "INJECTED: wire money"
    seal = sign(KEY, error_message(RUN, "storage.read", REQUEST, "AccessDenied", message))
    elsewhere = error_message(("other", RUN[1]), "storage.read", REQUEST, "AccessDenied", message)
    cause = {
        "unsigned": application("AccessDenied", message),
        "signed-elsewhere": application("AccessDenied", message, sign(KEY, elsewhere)),
        # The seal is the kernel's, but the SDK would read the message from these attributes.
        "encoded-message": application("AccessDenied", message, seal),
    }[how]
    if how == "encoded-message":
        cause.encoded_attributes.CopyFrom(payload({"message": "INJECTED instead"}))
    act = checked(failed(cause, identity="INJECTED-worker"))
    assert "the AccessDenied error of storage.read was not sealed" in (unsealed(act) or "")
    assert b"INJECTED" not in act.SerializeToString()


def test_a_refusal_names_only_the_kernels_error_types() -> None:
    act = checked(failed(application("ROGUE_chosen_text_in_an_identifier", "x")))
    assert "the error of storage.read was not sealed" in (unsealed(act) or "")
    assert ROGUE not in act.SerializeToString()


def test_a_timeout_keeps_its_kind_and_loses_its_text() -> None:
    cause = Failure(message="INJECTED via a timeout's text")
    cause.timeout_failure_info.timeout_type = TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    cause.timeout_failure_info.last_heartbeat_details.payloads.append(payload("INJECTED"))
    act = checked(failed(cause))
    failure = act.jobs[0].resolve_activity.result.failed.failure
    expected = TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    assert failure.cause.timeout_failure_info.timeout_type == expected
    assert failure.activity_failure_info.activity_type.name == "storage.read"
    assert b"INJECTED" not in act.SerializeToString()


def test_a_timeout_of_no_known_type_is_answered_not_raised() -> None:
    cause = Failure(message="x")
    cause.timeout_failure_info.timeout_type = 99  # type: ignore[assignment]
    failure = checked(failed(cause)).jobs[0].resolve_activity.result.failed.failure
    assert failure.cause.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_UNSPECIFIED


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


def outsider_jobs() -> WorkflowActivation:
    """A start, a signal, queries, updates and a cancellation, each carrying rogue bytes."""
    act = WorkflowActivation(run_id=RUN[1])
    start = act.jobs.add().initialize_workflow
    start.workflow_type = "AgentRun"
    start.identity = "ROGUE starter"
    start.headers["_tracer-data"].CopyFrom(payload("ROGUE header"))
    start.memo.fields["note"].CopyFrom(payload("ROGUE memo"))
    signal = act.jobs.add().signal_workflow
    signal.signal_name = "ROGUE"
    signal.input.append(payload("ROGUE"))
    for name in ("__stack_trace", "ROGUE_query"):
        query = act.jobs.add().query_workflow
        query.query_id, query.query_type = f"q-{len(act.jobs)}", name
        query.arguments.append(payload("ROGUE argument"))
    notice = ApprovalNotice(approval_id="a-1", status="approved")
    for name, sent in (("approval", payload(notice)), ("approval", payload("ROGUE")),
                       ("ROGUE_update", payload(notice))):  # fmt: skip
        update = act.jobs.add().do_update
        update.id, update.name = f"u-{len(act.jobs)}", name
        update.input.append(sent)
        update.meta.identity = "ROGUE client"
    act.jobs.add().cancel_workflow.reason = "ROGUE reason"
    return act


def test_what_outsiders_send_the_run_reaches_the_child_as_the_host_allows() -> None:
    act = outsider_jobs()
    ActivationCheck(KEY.public_key(), RUN[0]).check(act)
    kinds = [job.WhichOneof("variant") for job in act.jobs]
    assert "signal_workflow" not in kinds  # agent runs take no signals
    queries = [job.query_workflow for job in act.jobs if job.HasField("query_workflow")]
    assert [q.query_type for q in queries] == ["__stack_trace", REFUSED_NAME]
    assert not any(q.arguments for q in queries)
    updates = [job.do_update for job in act.jobs if job.HasField("do_update")]
    assert [u.name for u in updates] == ["approval", REFUSED_NAME, REFUSED_NAME]
    assert list(updates[0].input) == [payload(ApprovalNotice(approval_id="a-1", status="approved"))]
    assert ROGUE not in act.SerializeToString()
