"""What reaches a pool's confined child from outside its run: only what the host writes.

Besides the child's own history, an activation carries what others sent the run: syscall
answers (from whoever polled the task queue), signals, queries, updates and cancellations
(from anyone with the namespace's credentials). The host rewrites each activation before the
child sees it, so that none of an outsider's bytes reach agent code unvouched for:
- **syscall answers**: kernel workers seal every result and error they return
  (`kernos.kernel.result_seal`); the host knows what each activity asked (it let the command
  through), checks each answer against that request, this run and the kernel's public key, and
  hands the child an answer it writes itself: the result re-encoded without its seal, or the
  error's type and message only. An answer that does not verify (unsealed, sealed for another
  run or request, an encoding the kernel never writes) becomes the host's own `UnsealedResult`
  error. Timeouts and cancellations, which the server reports, keep their kind only;
- **signals** are dropped (agent runs take none; the host reads its own first, `pool_deaths`);
  **queries** keep their type if it is one of Temporal's own, and lose their arguments;
  **updates** pass only as `approval`, with an input that is an `ApprovalNotice`;
  **cancellations** lose their reason; headers and the starter's identity and memo are dropped
  everywhere.
The child's runs then trust the answers they are handed (`result_seal.BY_HOST`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import RetryState, TimeoutType
from temporalio.api.failure.v1 import (
    ActivityFailureInfo,
    ApplicationFailureInfo,
    CanceledFailureInfo,
    Failure,
    TimeoutFailureInfo,
)
from temporalio.bridge.proto.activity_result import ActivityResolution
from temporalio.bridge.proto.workflow_activation import (
    ResolveActivity,
    WorkflowActivation,
    WorkflowActivationJob,
)
from temporalio.bridge.proto.workflow_commands import ScheduleActivity
from temporalio.contrib.pydantic import pydantic_data_converter

from kernos.kernel import errors, result_seal
from kernos.kernel.syscall_table import SYSCALLS, Syscall
from kernos.kernel.syscalls import ApprovalNotice, SyscallResponse
from kernos.workflows.commands import json_scalar

Model = TypeVar("Model", bound=BaseModel)

#: How a JSON payload is marked (the kernel's data converter writes every request this way).
_JSON = b"json/plain"
#: The only update an agent run takes, and the queries Temporal itself sends (the UI's).
UPDATE = "approval"
QUERIES = frozenset({"__stack_trace", "__enhanced_stack_trace", "__temporal_workflow_metadata"})
#: What a refused query or update is renamed to: no handler has it, so the child refuses it.
REFUSED_NAME = "__kernos_refused"
#: The kernel's error types, which a refusal may name (any other is "an error").
KERNEL_ERRORS = frozenset(
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.KernosError)
)
#: Jobs a child never needs: answers to commands the host never lets through.
_NEVER = frozenset(
    {
        "resolve_child_workflow_execution_start",
        "resolve_child_workflow_execution",
        "resolve_signal_external_workflow",
        "resolve_request_cancel_external_workflow",
        "resolve_nexus_operation_start",
        "resolve_nexus_operation",
        "signal_workflow",
    }
)
_CONVERTER = pydantic_data_converter.payload_converter
#: The kernel's encoding of an empty answer (`run.finish`'s).
_NULL = _CONVERTER.to_payloads([None])[0]


@dataclass(frozen=True)
class _Asked:
    """An activity the run scheduled: which syscall, with what request (as it was sent)."""

    activity_type: str
    request: Payload


class ActivationCheck:
    """One run's scheduled syscalls, and the rewriting of what reaches its child."""

    def __init__(self, key: Ed25519PublicKey | None, workflow_id: str) -> None:
        self._key = key
        self._workflow_id = workflow_id
        self._asked: dict[int, _Asked] = {}

    def scheduled(self, command: ScheduleActivity) -> None:
        """Remember what an activity asks (a command the host has let through)."""
        request = command.arguments[0] if command.arguments else Payload()
        self._asked[command.seq] = _Asked(command.activity_type, request)

    def check(self, act: WorkflowActivation) -> None:
        """Rewrite `act`, in place, to hold only what the host vouches for."""
        dropped = False
        for job in act.jobs:
            kind = job.WhichOneof("variant")
            if kind in _NEVER:
                dropped = True
            elif kind == "resolve_activity" and self._key is not None:
                self._resolve(act.run_id, job.resolve_activity)
            else:
                _outsiders(job)
        if dropped:
            kept = [job for job in act.jobs if job.WhichOneof("variant") not in _NEVER]
            del act.jobs[:]
            act.jobs.extend(kept)

    def _resolve(self, run_id: str, resolve: ResolveActivity) -> None:
        asked = self._asked.pop(resolve.seq, None)
        syscall = SYSCALLS.get(asked.activity_type) if asked is not None else None
        previous = resolve.result
        try:
            if asked is None or syscall is None:
                answer: ActivityResolution | str = "result"
            else:
                answer = self._answer((self._workflow_id, run_id), syscall, asked, previous)
        except Exception:  # noqa: BLE001 - whatever an outsider sent, it is refused, not fatal
            answer = "result"
        if isinstance(answer, str):
            answer = _refused(previous, syscall.name if syscall else "activity", answer)
        resolve.result.CopyFrom(answer)

    def _answer(
        self, run: tuple[str, str], syscall: Syscall[Any, Any], asked: _Asked,
        result: ActivityResolution,
    ) -> ActivityResolution | str:  # fmt: skip
        """The host's own rewrite of a verified answer, or what was refused ("result", ...)."""
        assert self._key is not None
        status = result.WhichOneof("status")
        rewritten = ActivityResolution()
        if status == "completed" and syscall.response is type(None):
            # Nothing to seal: only an empty answer, exactly as the kernel's converter writes it.
            if result.completed.result != _NULL:
                return "result"
            rewritten.completed.result.CopyFrom(_NULL)
        elif status == "completed":
            response = self._sealed_result(run, syscall, asked.request, result.completed.result)
            if response is None:
                return "result"
            rewritten.completed.result.CopyFrom(_CONVERTER.to_payloads([response])[0])
        elif status == "failed":
            failure = result.failed.failure
            kind = failure.cause.WhichOneof("failure_info")
            if not failure.HasField("activity_failure_info"):
                return "error"
            if kind in ("timeout_failure_info", "canceled_failure_info"):
                rewritten.failed.failure.CopyFrom(_server_made(failure))
            else:
                cause = self._sealed_error(run, syscall, asked.request, failure.cause)
                if isinstance(cause, str):
                    return cause
                rewritten.failed.failure.CopyFrom(_wrapped(failure, cause))
        elif status == "cancelled":
            rewritten.cancelled.failure.CopyFrom(_server_made(result.cancelled.failure))
        else:
            return "result"  # a local activity's backoff: the run schedules none
        return rewritten

    def _sealed_result(
        self, run: tuple[str, str], syscall: Syscall[Any, Any], request: Payload,
        payload: Payload,
    ) -> BaseModel | None:  # fmt: skip
        """The response, without its seal, if a kernel worker sealed it for this request."""
        asked = _decoded(syscall.request, request)
        answer = _decoded(syscall.response, payload)
        if asked is None or not isinstance(answer, SyscallResponse):
            return None
        signed = result_seal.result_message(run, syscall.name, asked, answer)
        assert self._key is not None
        if not result_seal.verified(self._key, signed, answer.seal):
            return None
        return answer.model_copy(update={"seal": None})

    def _sealed_error(
        self, run: tuple[str, str], syscall: Syscall[Any, Any], request: Payload, cause: Failure
    ) -> Failure | str:
        """The error's type and message, if a kernel worker sealed them; else what to call it."""
        if cause.WhichOneof("failure_info") != "application_failure_info":
            return "error"
        info = cause.application_failure_info
        name = info.type or "ApplicationError"
        what = f"{name} error" if name in KERNEL_ERRORS else "error"
        asked = _decoded(syscall.request, request)
        details = info.details.payloads
        last = details[-1] if details else None
        signature = (
            json_scalar(last.data) if last and last.metadata.get("encoding") == _JSON else None
        )
        # A kernel error's fields come first, where its type has any (then its seal).
        carried = len(details) == 2 and errors.carried_fields(name)
        fields = (_json_object(details[0]) if carried else None) or {}
        # Encoded attributes would stand in for the message the seal covers: no kernel worker
        # writes them.
        if asked is None or not isinstance(signature, str) or cause.HasField("encoded_attributes"):
            return what
        signed = result_seal.error_message(run, syscall.name, asked, name, cause.message, fields)
        assert self._key is not None
        if not result_seal.verified(self._key, signed, signature):
            return what
        # The type, the message and the fields, which the seal covers; nothing else the worker
        # sent (the fields as they were read, whatever their bytes were).
        kept = ApplicationFailureInfo(type=name)
        if fields:
            kept.details.payloads.extend(_CONVERTER.to_payloads([fields]))
        return Failure(message=cause.message, application_failure_info=kept)


def _outsiders(job: WorkflowActivationJob) -> None:
    """Strip, in place, what an outsider could have put in a job other than an answer."""
    kind = job.WhichOneof("variant")
    if kind == "initialize_workflow":
        start = job.initialize_workflow
        start.ClearField("headers")
        start.ClearField("memo")
        start.identity = ""
    elif kind == "query_workflow":
        query = job.query_workflow
        if query.query_type not in QUERIES:
            query.query_type = REFUSED_NAME
        query.ClearField("arguments")
        query.ClearField("headers")
    elif kind == "do_update":
        update = job.do_update
        notice = _decoded(ApprovalNotice, update.input[0]) if len(update.input) == 1 else None
        update.ClearField("input")
        update.ClearField("headers")
        update.meta.identity = ""
        if update.name != UPDATE or notice is None:
            update.name = REFUSED_NAME
        else:
            update.input.append(_CONVERTER.to_payloads([notice])[0])
    elif kind == "cancel_workflow":
        job.cancel_workflow.reason = ""


def _decoded(model: type[Model], payload: Payload) -> Model | None:
    if payload.metadata.get("encoding") != _JSON:
        return None
    try:
        return model.model_validate_json(payload.data)
    except ValidationError:
        return None


def _activity_info(failure: Failure) -> ActivityFailureInfo:
    """The activity's identity in a failure, less the worker's identity (who completed it)."""
    known = failure.activity_failure_info
    info = ActivityFailureInfo(
        scheduled_event_id=known.scheduled_event_id,
        started_event_id=known.started_event_id,
        activity_id=known.activity_id,
        retry_state=(
            known.retry_state
            if known.retry_state in RetryState.values()
            else RetryState.RETRY_STATE_UNSPECIFIED
        ),
    )
    info.activity_type.name = known.activity_type.name
    return info


def _json_object(payload: Payload) -> dict[str, Any] | None:
    """A payload's JSON object; None if it is something else."""
    if payload.metadata.get("encoding") != _JSON:
        return None
    try:
        value = json.loads(payload.data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _wrapped(original: Failure, cause: Failure) -> Failure:
    return Failure(
        message="activity error", activity_failure_info=_activity_info(original), cause=cause
    )


def _server_made(failure: Failure) -> Failure:
    """A timeout's or cancellation's kind, and none of the text that anyone could have set."""
    wrapped = failure.HasField("activity_failure_info")
    made = failure.cause if wrapped else failure
    kept = Failure()
    if made.HasField("timeout_failure_info"):
        timeout = made.timeout_failure_info.timeout_type
        if timeout not in TimeoutType.values():
            timeout = TimeoutType.TIMEOUT_TYPE_UNSPECIFIED
        name = TimeoutType.Name(timeout).removeprefix("TIMEOUT_TYPE_")
        kept.message = f"activity {name} timeout"
        kept.timeout_failure_info.CopyFrom(TimeoutFailureInfo(timeout_type=timeout))
    else:
        kept.message = "activity cancelled"
        kept.canceled_failure_info.CopyFrom(CanceledFailureInfo())
    return _wrapped(failure, kept) if wrapped else kept


def _refused(previous: ActivityResolution, syscall: str, what: str) -> ActivityResolution:
    """The host's own UnsealedResult error, in place of an answer it could not verify."""
    info = ActivityFailureInfo(retry_state=RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE)
    if previous.HasField("failed") and previous.failed.failure.HasField("activity_failure_info"):
        info = _activity_info(previous.failed.failure)
        info.retry_state = RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
    info.activity_type.name = syscall
    refused = ActivityResolution()
    refused.failed.failure.CopyFrom(
        Failure(
            message="activity error",
            activity_failure_info=info,
            cause=Failure(
                message=result_seal.refusal(syscall, what),
                application_failure_info=ApplicationFailureInfo(
                    type=errors.UnsealedResult.__name__, non_retryable=True
                ),
            ),
        )
    )
    return refused
