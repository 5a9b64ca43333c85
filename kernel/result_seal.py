"""Syscall results sealed by the kernel's workers, checked before agent code sees them.

Whoever can poll a kernel task queue (a leaked Temporal credential, on a cluster) could
complete a syscall's activity with a result of its own. Kernel workers therefore seal every
result and every error they return with an HMAC under `[temporal] result_key`, bound to the
run (its workflow id), the syscall and the request it answers; the workflow side (agent
workers, which hold the same key) checks the seal and refuses, with `UnsealedResult`, any
result or error that does not carry it, so neither its content nor its message reaches the
agent. A sealed result replayed into another run, or for another request, does not verify.

Runs started before results were sealed are recognised by the `PATCH` marker's absence in
their history, and are not checked: their replay stays what it was.
"""

from __future__ import annotations

import hashlib
import hmac
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

#: The version marker in the history of every run whose results are checked.
PATCH = "kernos-sealed-results"
#: The key the current workflow's results are checked with (set by `SealCheckInterceptor`).
CHECK_KEY: ContextVar[bytes | None] = ContextVar("kernos_result_key", default=None)


def _mac(key: bytes, *parts: str) -> str:
    mac = hmac.new(key, b"kernos-result-v1", hashlib.sha256)
    for part in parts:
        data = part.encode()
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.hexdigest()


def _digest(request: BaseModel | None) -> str:
    text = request.model_dump_json() if request is not None else ""
    return hashlib.sha256(text.encode()).hexdigest()


def result_seal(
    key: bytes, workflow_id: str, syscall: str, request: BaseModel | None, response: BaseModel
) -> str:
    """The seal of `response` as the answer to `request` in run `workflow_id`."""
    body = response.model_dump_json(exclude={"seal"})
    return _mac(key, workflow_id, syscall, _digest(request), "ok", body)


def error_seal(
    key: bytes, workflow_id: str, syscall: str, request: BaseModel | None, kind: str, message: str
) -> str:
    """The seal of an error (its type name and message) as the answer to `request`."""
    return _mac(key, workflow_id, syscall, _digest(request), "error", kind, message)


def verified(expected: str, presented: Any) -> bool:
    """Whether `presented` is the expected seal (compared in constant time)."""
    return isinstance(presented, str) and hmac.compare_digest(expected, presented)


class SealCheckInterceptor(Interceptor):
    """On an agent worker: every run it executes checks its results with `key`."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        """An inbound interceptor that hands the key to the run's dispatcher."""
        key = self._key

        class _WithKey(WorkflowInboundInterceptor):
            async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
                # Tasks the run starts inherit the context, and with it the key.
                CHECK_KEY.set(key)
                return await super().execute_workflow(input)

        return _WithKey


def checking() -> bytes | None:
    """The key to check the current run's results with, or None if they are not checked.

    Not checked: on a worker with no key, and in a run from before results were sealed.
    """
    key = CHECK_KEY.get()
    if key is None or not workflow.patched(PATCH):
        return None
    return key
