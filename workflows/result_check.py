"""A pool's host checks each syscall's answer before the run's confined child sees it.

Kernel workers seal every result and error they return (`kernos.kernel.result_seal`); another
poller of a syscall's task queue cannot. The host knows what each activity asked (it checked
the command that scheduled it), so it checks every answer against that request, this run and
the kernel's public key, and rewrites the activation the child receives:
- a result or an application error that verifies passes, less what no seal covers (the
  error's chained cause and stack trace, the completing worker's identity);
- anything else that claims to be a worker's answer (a result or an error unsealed, sealed
  for another run or request, or with an encoding the kernel never uses) becomes an
  `UnsealedResult` error written by the host, so none of its content enters the child;
- timeouts and cancellations, which the server reports, keep their kind and lose their text.
The child's runs then trust what they are handed (`result_seal.BY_HOST`).
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
from temporalio.bridge.proto.workflow_activation import ResolveActivity, WorkflowActivation
from temporalio.bridge.proto.workflow_commands import ScheduleActivity

from kernos.kernel import result_seal
from kernos.kernel.errors import UnsealedResult
from kernos.kernel.syscall_table import SYSCALLS, Syscall

Model = TypeVar("Model", bound=BaseModel)

#: How a JSON payload is marked (the kernel's data converter writes every request this way).
_JSON = b"json/plain"
_NULL = b"binary/null"


@dataclass(frozen=True)
class _Asked:
    """An activity the run scheduled: which syscall, with what request (as it was sent)."""

    activity_type: str
    request: Payload


class ResultCheck:
    """One run's scheduled syscalls, and the check of their answers."""

    def __init__(self, key: Ed25519PublicKey, workflow_id: str) -> None:
        self._key = key
        self._workflow_id = workflow_id
        self._asked: dict[int, _Asked] = {}

    def scheduled(self, command: ScheduleActivity) -> None:
        """Remember what an activity asks (a command the host has let through)."""
        request = command.arguments[0] if command.arguments else Payload()
        self._asked[command.seq] = _Asked(command.activity_type, request)

    def check(self, act: WorkflowActivation) -> None:
        """Rewrite, in place, every activity answer in `act` that is not the kernel's."""
        for job in act.jobs:
            if job.HasField("resolve_activity"):
                self._resolve(act.run_id, job.resolve_activity)

    def _resolve(self, run_id: str, resolve: ResolveActivity) -> None:
        asked = self._asked.pop(resolve.seq, None)
        syscall = SYSCALLS.get(asked.activity_type) if asked is not None else None
        if asked is None or syscall is None:
            _replace(resolve, "activity", "result")
            return
        result = resolve.result
        status = result.WhichOneof("status")
        run = (self._workflow_id, run_id)
        if status == "completed":
            if not self._result_sealed(run, syscall, asked.request, result.completed.result):
                _replace(resolve, syscall.name, "result")
        elif status == "failed":
            what = self._failure_unsealed(run, syscall, asked.request, result.failed.failure)
            if what is not None:
                _replace(resolve, syscall.name, what)
        elif status == "cancelled":
            _server_made(result.cancelled.failure)
        else:
            # A local activity's backoff: the run schedules none.
            _replace(resolve, syscall.name, "result")

    def _result_sealed(
        self, run: tuple[str, str], syscall: Syscall[Any, Any], request: Payload,
        payload: Payload,
    ) -> bool:  # fmt: skip
        if syscall.response is type(None):
            return payload.metadata.get("encoding") == _NULL or not payload.data
        asked = _decoded(syscall.request, request)
        answer = _decoded(syscall.response, payload)
        if asked is None or answer is None:
            return False
        signed = result_seal.result_message(run, syscall.name, asked, answer)
        return result_seal.verified(self._key, signed, getattr(answer, "seal", None))

    def _failure_unsealed(
        self, run: tuple[str, str], syscall: Syscall[Any, Any], request: Payload,
        failure: Failure,
    ) -> str | None:  # fmt: skip
        """What in an activity's failure is not the kernel's or the server's, or None."""
        if not failure.HasField("activity_failure_info"):
            return "error"
        failure.activity_failure_info.identity = ""
        cause = failure.cause
        kind = cause.WhichOneof("failure_info")
        if kind in ("timeout_failure_info", "canceled_failure_info"):
            _server_made(failure)
            return None
        if kind != "application_failure_info":
            return "error"
        info = cause.application_failure_info
        name = info.type or "ApplicationError"
        what = f"{name} error" if name.isidentifier() and len(name) <= 64 else "error"
        asked = _decoded(syscall.request, request)
        signature = _json(info.details.payloads[-1]) if info.details.payloads else None
        # Encoded attributes would stand in for the message the seal covers: no kernel worker
        # writes them.
        if asked is None or not isinstance(signature, str) or cause.HasField("encoded_attributes"):
            return what
        signed = result_seal.error_message(run, syscall.name, asked, name, cause.message)
        if not result_seal.verified(self._key, signed, signature):
            return what
        # The seal covers the type and the message; the worker's chained exceptions and stack
        # are its own business, and no seal vouches for them.
        cause.ClearField("cause")
        cause.ClearField("stack_trace")
        return None


def _decoded(model: type[Model], payload: Payload) -> Model | None:
    if payload.metadata.get("encoding") != _JSON:
        return None
    try:
        return model.model_validate_json(payload.data)
    except ValidationError:
        return None


def _json(payload: Payload) -> object:
    if payload.metadata.get("encoding") != _JSON:
        return None
    try:
        return json.loads(payload.data)
    except (ValueError, RecursionError):
        return None


def _server_made(failure: Failure) -> None:
    """Keep a timeout's or cancellation's kind; drop the text that anyone could have set."""
    wrapped = failure.HasField("activity_failure_info")
    made = failure.cause if wrapped else failure
    kept = Failure()
    if made.HasField("timeout_failure_info"):
        timeout = made.timeout_failure_info.timeout_type
        kept.message = f"activity {TimeoutType.Name(timeout).removeprefix('TIMEOUT_TYPE_')} timeout"
        kept.timeout_failure_info.CopyFrom(TimeoutFailureInfo(timeout_type=timeout))
    else:
        kept.message = "activity cancelled"
        kept.canceled_failure_info.CopyFrom(CanceledFailureInfo())
    if not wrapped:
        failure.CopyFrom(kept)
        return
    outer = ActivityFailureInfo()
    outer.CopyFrom(failure.activity_failure_info)
    outer.identity = ""
    failure.Clear()
    failure.message = "activity error"
    failure.activity_failure_info.CopyFrom(outer)
    failure.cause.CopyFrom(kept)


def _replace(resolve: ResolveActivity, syscall: str, what: str) -> None:
    """Put the host's own UnsealedResult error in place of an answer it could not verify."""
    previous = resolve.result
    info = ActivityFailureInfo(retry_state=RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE)
    info.activity_type.name = syscall
    if previous.HasField("failed") and previous.failed.failure.HasField("activity_failure_info"):
        known = previous.failed.failure.activity_failure_info
        info.scheduled_event_id = known.scheduled_event_id
        info.started_event_id = known.started_event_id
        info.activity_id = known.activity_id
    failure = Failure(
        message="activity error",
        activity_failure_info=info,
        cause=Failure(
            message=result_seal.refusal(syscall, what),
            application_failure_info=ApplicationFailureInfo(
                type=UnsealedResult.__name__, non_retryable=True
            ),
        ),
    )
    replaced = ActivityResolution()
    replaced.failed.failure.CopyFrom(failure)
    resolve.result.CopyFrom(replaced)
