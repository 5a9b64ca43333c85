"""The gateway's OpenAI-compatible face: apps that speak OpenAI's API use kernos unchanged.

    POST /v1/chat/completions   OpenAI's body -> a `chat.completion`, or chunks (`stream: true`)
    GET  /v1/models             the models this key may use

The bearer is a kernos API key (`OpenAI(base_url=".../v1", api_key="kn_...")`). Who asks, what
they may use (`llm:<model>`), their budget, queue, priority and fair share all come from the
kernel's records for that key; the body says only what to generate. Each request is admitted as
a run of kernos's own agent (`kernos.chat_run`): durable, in `kernos ps` and the Temporal UI,
scheduled with everyone else's work, audited. Its id comes back in `X-Kernos-Run`.

The body is read as any OpenAI client's is inside a run (`kernel/llm/chat_completions.py`):
messages, `tools` and `tool_choice` (the caller's own tools: the model's calls come back to the
caller, the kernel runs none), `response_format` with a JSON schema (decoded to it), sampling
(`max_tokens`, `temperature`, `top_p`, `stop`, `seed`) and `stream_options.include_usage`. A
streamed answer is sent as OpenAI's chunks once the run has it whole: the kernel streams the
generation to the run, not yet to the gateway.

Errors come back in OpenAI's shape, with its statuses: 401 without a good key, 403 when policy
denies the model, 404 for a model no instance serves, 400 naming the field kernos cannot take,
413 for a body or request over the kernel's limits, 429 (with `Retry-After`) past a token
budget or a server's rate limit, 503 when no server could answer.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kernos.client import KernosClient, RunFailed
from kernos.gateway import Refused, parse_json, read_body
from kernos.kernel import errors
from kernos.kernel.access import Subject
from kernos.kernel.config import CHAT_AGENT
from kernos.kernel.errors import PayloadTooLarge, UnknownModel
from kernos.kernel.llm import chat_completions
from kernos.kernel.policy_store import load_access
from kernos.kernel.syscall_table import LLM_CHAT
from kernos.kernel.syscalls import LLMResponse, RunSpec

#: What a run's failure is answered with, by the kernel's error (or the nearest it derives from).
_STATUS: tuple[tuple[type[errors.KernosError], int], ...] = (
    (errors.PayloadTooLarge, 413),
    (errors.UnknownModel, 404),
    (errors.TokenBudgetExceeded, 429),
    (errors.LLMRateLimited, 429),
    (errors.AccessDenied, 403),
    (errors.InvalidRequest, 400),
    (errors.LLMBadRequest, 400),
    (errors.LLMUnavailable, 503),
)
#: How long a client is told to wait before asking again after a 429.
RETRY_AFTER_S = 5


def _failure_status(error_type: str) -> int:
    """The status for a run that ended with the kernel's `error_type` (500: the kernel's own)."""
    kind = getattr(errors, error_type, None)
    if isinstance(kind, type) and issubclass(kind, errors.KernosError):
        for base, status in _STATUS:
            if issubclass(kind, base):
                return status
    return 500


def _refused(status: int, kind: str, message: str) -> Refused:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
    return Refused(status, kind, message, headers=headers)


async def chat_completion(request: Request, client: KernosClient) -> Response:
    """One chat completion, admitted and answered as a run of `CHAT_AGENT`."""
    limit = client.settings.max_task_bytes * 2 + 64 * 1024
    body = parse_json(await read_body(request, limit))
    asked = chat_completions.request_from_body(body)  # InvalidRequest (400) unless an object
    assert isinstance(body, dict)
    spec = RunSpec(agent=CHAT_AGENT, task=asked.model_dump_json(), model=asked.model)
    try:
        handle = await client.submit(spec)
    except UnknownModel as exc:
        raise _refused(404, "model_not_found", str(exc)) from None
    except PayloadTooLarge as exc:
        raise _refused(413, type(exc).__name__, str(exc)) from None
    try:
        result = await handle.result()
    except RunFailed as exc:
        raise _refused(_failure_status(exc.error_type), exc.error_type, exc.message) from None
    reply = LLMResponse.model_validate_json(result.output)
    made, created = f"chatcmpl-{handle.run_id}", int(time.time())
    headers = {"X-Kernos-Run": handle.run_id}
    if not body.get("stream"):
        answer = chat_completions.completion(reply, id=made, created=created)
        return JSONResponse(answer, headers=headers)
    usage = chat_completions.include_usage(body)
    chunks = chat_completions.chunks(reply, id=made, created=created, include_usage=usage)
    return Response(
        chat_completions.server_sent(chunks), media_type="text/event-stream", headers=headers
    )


async def models(request: Request, client: KernosClient) -> JSONResponse:
    """The models some instance serves that policy lets this key's user ask for."""
    principal = client.principal
    assert principal is not None
    access = await load_access(client.settings)
    subject = Subject("", principal.tenant, principal.user, CHAT_AGENT)
    usable = [
        model
        for model in client.settings.models()
        if access.decide(subject, LLM_CHAT.name, f"llm:{model}").allowed
    ]
    listed: list[dict[str, Any]] = [
        {"id": model, "object": "model", "created": 0, "owned_by": "kernos"} for model in usable
    ]
    return JSONResponse({"object": "list", "data": listed})
