"""Syscall results signed by the kernel's workers, checked before agent code sees them.

Whoever can poll a kernel task queue (a leaked Temporal credential on a cluster, or agent code
that reaches its worker's Temporal client) could complete a syscall's activity with a result of
its own. Kernel workers therefore sign every result and every error they return with an
Ed25519 key only they hold (`[temporal] result_signing_key`), over the run (workflow id and
execution), the syscall and the request it answers; the workflow side checks the signature
with the public key (`[temporal] result_check_key`, no secret: agent workers and agent code may
read it) and refuses, with `UnsealedResult`, any result or error without a valid one, so
neither its content nor its message reaches the agent. A signed result replayed into another
run or execution, or for another request, does not verify.

Where agent code runs in a pool's confined child, its trusted host checks each result before
the child sees it (`kernos.workflows.activation_check`) and hands on, in place of one that fails,
an `UnsealedResult` error of its own; the child's runs then only take the seals off.

Runs started before results were signed are recognised by the `PATCH` marker's absence in
their history, and are not checked: their replay stays what it was. (A pool's host checks every
result, so such runs must end on an agent worker that runs agent code in its own process.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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
#: Says that the host of a pool's child checked every result before the child saw it.
BY_HOST: Final = "checked-by-host"
#: How the current workflow's results are checked (set by `SealCheckInterceptor`): with a key,
#: or already by the host.
CHECK_KEY: ContextVar[Ed25519PublicKey | Literal["checked-by-host"] | None] = ContextVar(
    "kernos_result_key", default=None
)


def signing_key(hex_seed: str) -> Ed25519PrivateKey:
    """The kernel workers' signing key from its 32-byte seed, in hex (ValueError if not)."""
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(hex_seed))


def check_key(hex_key: str) -> Ed25519PublicKey:
    """The public key that checks results, from its 32 bytes in hex (ValueError if not)."""
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))


def public_hex(key: Ed25519PrivateKey) -> str:
    """The public half of a signing key, in hex: what agent workers are given."""
    return key.public_key().public_bytes_raw().hex()


def new_signing_key() -> str:
    """A fresh signing key's seed, in hex."""
    return Ed25519PrivateKey.generate().private_bytes_raw().hex()


def _message(*parts: str) -> bytes:
    data = bytearray(b"kernos-result-v1")
    for part in parts:
        encoded = part.encode()
        data += len(encoded).to_bytes(8, "big") + encoded
    return bytes(data)


def _digest(request: BaseModel | None) -> str:
    text = request.model_dump_json() if request is not None else ""
    return hashlib.sha256(text.encode()).hexdigest()


def result_message(run: tuple[str, str], syscall: str, request: BaseModel | None,
                   response: BaseModel) -> bytes:  # fmt: skip
    """What is signed for `response` as the answer to `request` in run (workflow, execution)."""
    body = response.model_dump_json(exclude={"seal"})
    return _message(*run, syscall, _digest(request), "ok", body)


def error_message(
    run: tuple[str, str],
    syscall: str,
    request: BaseModel | None,
    kind: str,
    text: str,
    fields: Mapping[str, Any] | None = None,
) -> bytes:
    """What is signed for an error (its type name, message and fields) answering `request`.

    Without fields, what was signed before errors carried them.
    """
    parts = [kind, text]
    if fields:
        parts.append(json.dumps(fields, sort_keys=True, separators=(",", ":")))
    return _message(*run, syscall, _digest(request), "error", *parts)


def refusal(syscall: str, what: str) -> str:
    """The message of the `UnsealedResult` that replaces `what` ("result", "X error") of a call."""
    return (
        f"the {what} of {syscall} was not sealed by a kernel worker: another poller of its task "
        "queue completed it, or the agent worker's [temporal] result_check_key is not the "
        "kernel workers' key's. Refused, unread"
    )


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    """The signature of `message`, in hex."""
    return key.sign(message).hex()


def verified(key: Ed25519PublicKey, message: bytes, presented: Any) -> bool:
    """Whether `presented` is a valid signature of `message` under `key`."""
    if not isinstance(presented, str):
        return False
    try:
        key.verify(bytes.fromhex(presented), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SealCheckInterceptor(Interceptor):
    """On an agent worker: every run it executes checks its results with `key`.

    In a pool's child, `key` is `BY_HOST`: its host has checked them already.
    """

    def __init__(self, key: Ed25519PublicKey | Literal["checked-by-host"]) -> None:
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


def checking() -> Ed25519PublicKey | Literal["checked-by-host"] | None:
    """The key to check the current run's results with, `BY_HOST`, or None if not checked.

    Not checked: on a worker with no key, and in a run from before results were sealed.
    """
    key = CHECK_KEY.get()
    if key is None or not workflow.patched(PATCH):
        return None
    return key
