"""The gateway's OpenAI-compatible face: apps that speak OpenAI's API use kernos unchanged.

    POST /v1/chat/completions   OpenAI's body -> a `chat.completion`, or chunks (`stream: true`)
    GET  /v1/models             the models this key may use

The bearer is a kernos API key (`OpenAI(base_url=".../v1", api_key="kn_...")`). Who asks, what
they may use (`llm:<model>`), their budget, queue, priority and fair share all come from the
kernel's records for that key; the body says only what to generate. Each request is admitted as
a run of kernos's own agent (`kernos.chat_run`): durable, in `kernos ps` and the Temporal UI,
scheduled with everyone else's work, audited. Its id comes back in `X-Kernos-Run`. A client's
consecutive requests that carry one `X-Kernos-Session` are runs of one session: with cache
affinity on (`[scheduler] affinity_s`), each goes first to the instance that served the last,
whose cache holds the conversation so far (`kernel/sessions.py`).

The body is read as any OpenAI client's is inside a run (`kernel/llm/chat_completions.py`):
messages, `tools` and `tool_choice` (the caller's own tools: the model's calls come back to the
caller, the kernel runs none), `response_format` with a JSON schema (decoded to it), sampling
(`max_tokens`, `temperature`, `top_p`, `stop`, `seed`) and `stream_options.include_usage`. A
streamed answer's text is sent as the model writes it (the run's `llm.delta` events), its end
as the run returned it; with `tools`, whole once the run has it (a call is known only whole).
Nothing is sent before the first text, so a refusal is answered with its status even then.

Errors come back in OpenAI's shape, with its statuses: 401 without a good key, 403 when policy
denies the model, 404 for a model no instance serves, 400 naming the field kernos cannot take,
413 for a body or request over the kernel's limits, 429 (with `Retry-After`) past a token
budget or a server's rate limit, 503 when no server could answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kernos.client import KernosClient, RunFailed, RunHandle
from kernos.gateway import (
    STREAM_HEADERS,
    ClosingStream,
    Refused,
    cancel_run,
    parse_json,
    read_body,
)
from kernos.kernel import errors
from kernos.kernel.access import Subject
from kernos.kernel.config import CHAT_AGENT
from kernos.kernel.errors import PayloadTooLarge, UnknownModel
from kernos.kernel.llm import chat_completions
from kernos.kernel.policy_store import load_access
from kernos.kernel.run_events import RunEvent, RunFinished, TokenDelta
from kernos.kernel.syscall_table import LLM_CHAT
from kernos.kernel.syscalls import LLMResponse, RunResult, RunSpec, TokenUsage
from kernos.kernel.syscalls.run_spec import SESSION_PATTERN

log = logging.getLogger(__name__)

#: What a run's failure is answered with, by the kernel's error (or the nearest it derives from).
_STATUS: tuple[tuple[type[errors.KernosError], int, str], ...] = (
    (errors.PayloadTooLarge, 413, "request_too_large"),
    (errors.UnknownModel, 404, "model_not_found"),
    (errors.TokenBudgetExceeded, 429, "insufficient_quota"),
    (errors.AccessDenied, 403, "permission_denied"),
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.LLMBadRequest, 400, "invalid_request_error"),
)
#: The header that names a client's session (its requests' runs share cache affinity).
SESSION_HEADER = "X-Kernos-Session"
#: Every error of this endpoint tells OpenAI's client not to ask again by itself: each request
#: is a run, so a retry is a second run (and a second charge), the caller's to decide.
_NO_RETRY = {"x-should-retry": "false"}
#: How often a waiting request looks whether its client is still there.
_WATCH_S = 0.5
#: Cancellations of runs whose streamed answer was cut off (kept until done).
_CANCELLING: set[asyncio.Future[None]] = set()
Answer = TypeVar("Answer")


def _refused(status: int, code: str, message: str, run_id: str | None = None) -> Refused:
    """An error answer with OpenAI's `code`, not to be retried.

    It names the request's run once there is one.
    """
    headers = {**_NO_RETRY, **({"X-Kernos-Run": run_id} if run_id else {})}
    kind = "invalid_request_error" if status < 500 else "server_error"
    return Refused(status, kind, message, code=code, headers=headers)


def _failure(exc: RunFailed) -> Refused:
    """A run's failure as the client is answered: the kernel's error, or a cancelled run."""
    kind = getattr(errors, exc.error_type, None)
    if isinstance(kind, type) and issubclass(kind, errors.KernosError):
        for base, status, code in _STATUS:
            if issubclass(kind, base):
                return _refused(status, code, f"{exc.error_type}: {exc.message}", exc.run_id)
    if exc.error_type in ("CancelledError", "TerminatedError"):
        stopped = f"the request's run was stopped: {exc.message}"
        return _refused(409, "run_cancelled", stopped, exc.run_id)
    failed = f"the request's run failed: {exc.error_type}"
    return _refused(500, "internal_error", failed, exc.run_id)


def _kernel_tools(body: dict[str, Any]) -> None:
    """A 400 if the body names the kernel's tools: a caller's tools are its own to run."""
    for index, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        parameters = function.get("parameters") if isinstance(function, dict) else None
        if isinstance(parameters, dict) and chat_completions.KERNEL_TOOL in parameters:
            raise _refused(
                400, "invalid_request_error",
                f"tools[{index}].function.parameters.{chat_completions.KERNEL_TOOL}: the "
                "endpoint offers the caller's own tools only (their calls come back to it)",
            )  # fmt: skip


class _GaveUp(Exception):
    """The client went away, or the wait passed `[gateway] chat_timeout_s`.

    The run is cancelled by then (audited).
    """


async def _waited(
    request: Request, client: KernosClient, handle: RunHandle, waiting: Awaitable[Answer],
    deadline: float,
) -> Answer:  # fmt: skip
    """What `waiting` comes to; _GaveUp, the run cancelled, if the client goes or time is up."""
    pending = asyncio.ensure_future(waiting)
    loop = asyncio.get_running_loop()
    try:
        while not pending.done():
            await asyncio.wait([pending], timeout=_WATCH_S)
            if pending.done():
                break
            gone = await request.is_disconnected()
            if gone or loop.time() > deadline:
                why = "the client went away" if gone else "the wait passed chat_timeout_s"
                record = await client.runs.get(handle.run_id)
                await cancel_run(client, record, f"chat completion cancelled: {why}")
                raise _GaveUp(f"no answer in time: run {handle.run_id} was cancelled ({why})")
        return pending.result()
    finally:
        pending.cancel()


def _session(request: Request) -> str | None:
    """The request's `X-Kernos-Session`, if it carries a well-formed one."""
    session = request.headers.get(SESSION_HEADER)
    if session is not None and not re.fullmatch(SESSION_PATTERN, session):
        raise _refused(
            400, "invalid_request_error", f"header {SESSION_HEADER} must be 1 to 128 printable "
            "ASCII characters without spaces",
        )  # fmt: skip
    return session


def _deadline(client: KernosClient) -> float:
    return asyncio.get_running_loop().time() + client.settings.gateway.chat_timeout_s


async def _reply(client: KernosClient, handle: RunHandle, result: RunResult) -> LLMResponse:
    """The run's answer, with the usage the kernel recorded (not what its output says)."""
    reply = LLMResponse.model_validate_json(result.output)
    record = await client.runs.get(handle.run_id)
    usage = TokenUsage(input_tokens=record.input_tokens, output_tokens=record.output_tokens)
    return reply.model_copy(update={"usage": usage})


async def chat_completion(request: Request, client: KernosClient) -> Response:
    """One chat completion, admitted and answered as a run of `CHAT_AGENT`."""
    limit = client.settings.max_task_bytes * 2 + 64 * 1024
    body = parse_json(await read_body(request, limit))
    asked = chat_completions.request_from_body(body)  # InvalidRequest (400) unless an object
    assert isinstance(body, dict)
    _kernel_tools(body)
    spec = RunSpec(
        agent=CHAT_AGENT, task=asked.model_dump_json(), model=asked.model, session=_session(request)
    )
    try:
        handle = await client.submit(spec)
    except UnknownModel as exc:
        raise _refused(404, "model_not_found", str(exc)) from None
    except PayloadTooLarge as exc:
        raise _refused(413, "request_too_large", f"the request is {exc.size} bytes as the "
                       f"kernel takes it, over max_task_bytes ({exc.limit})") from None  # fmt: skip
    made, created = f"chatcmpl-{handle.run_id}", int(time.time())
    headers = {"X-Kernos-Run": handle.run_id}
    deadline = _deadline(client)
    streamed = bool(body.get("stream"))
    usage = chat_completions.include_usage(body)
    try:
        if streamed and not asked.tools:
            # Text as it is generated; a call of the caller's tools is known only once whole.
            first = await _waited(request, client, handle, _first_text(client, handle), deadline)
            if first is not None:
                answered = _Answered()
                live = _live(request, client, handle, first, deadline, made, created, usage,
                             answered)  # fmt: skip

                def closed() -> None:
                    if not answered.done:  # cut off, or never begun: so is the run
                        ending = asyncio.ensure_future(_cancel_quietly(client, handle))
                        _CANCELLING.add(ending)
                        ending.add_done_callback(_CANCELLING.discard)

                return ClosingStream(live, on_close=closed, headers=headers | STREAM_HEADERS)
        result = await _waited(request, client, handle, handle.result(), deadline)
    except _GaveUp as exc:
        raise _refused(504, "timeout", str(exc), handle.run_id) from None
    except RunFailed as exc:
        raise _failure(exc) from None
    reply = await _reply(client, handle, result)
    if not streamed:
        answer = chat_completions.completion(reply, id=made, created=created)
        return JSONResponse(answer, headers=headers)
    chunks = chat_completions.chunks(reply, id=made, created=created, include_usage=usage)
    return Response(
        chat_completions.server_sent(chunks), media_type="text/event-stream", headers=headers
    )


async def _first_text(client: KernosClient, handle: RunHandle) -> _Following | None:
    """The run's events up to its first text; None if it ends without any.

    Nothing is answered before: a run refused or failed before it says a word is answered
    with its error's status, as when not streamed.
    """
    events = aiter(client.stream(handle.run_id))
    async for event in events:
        if isinstance(event, TokenDelta) and event.text:
            return _Following(events, event)
        if isinstance(event, RunFinished):
            break
    return None


class _Answered:
    """Whether a live answer was sent to its end."""

    done = False


class _Following:
    """A run's events being followed, and the first text they held."""

    def __init__(self, events: AsyncIterator[RunEvent], first: TokenDelta) -> None:
        self.events = events
        self.first = first


async def _live(
    request: Request, client: KernosClient, handle: RunHandle, following: _Following,
    deadline: float, made: str, created: int, usage: bool, answered: _Answered,
) -> AsyncIterator[str]:  # fmt: skip
    """The answer's chunks as the model writes them, then its end as the run returned it.

    A failure after the first chunk comes as an error event (the status is sent by then). Only
    what extends the text sent so far is sent: a retried attempt that rewrites the text (with
    sampling, after a crash) sends nothing until it writes past it.
    """
    model = following.first.model
    generated, sent = "", ""
    try:
        delta: RunEvent | None = following.first
        while delta is not None and not isinstance(delta, RunFinished):
            if isinstance(delta, TokenDelta):
                generated = delta.apply(generated)
                if generated.startswith(sent) and len(generated) > len(sent):
                    chunk = chat_completions.text_chunk(
                        generated[len(sent) :], first=not sent, id=made, created=created,
                        model=model,
                    )  # fmt: skip
                    yield chat_completions.server_sent_chunk(chunk)
                    sent = generated
            delta = await _waited(request, client, handle, anext(following.events, None), deadline)
        try:
            result = await _waited(request, client, handle, handle.result(), deadline)
        except RunFailed as exc:
            refused = _failure(exc)
            error = chat_completions.error_body(str(refused), refused.kind, refused.code)
            yield chat_completions.server_sent_chunk(error)
        else:
            reply = await _reply(client, handle, result)
            for chunk in chat_completions.chunks(
                reply, id=made, created=created, include_usage=usage, sent=sent
            ):
                yield chat_completions.server_sent_chunk(chunk)
        yield chat_completions.STREAM_END
        answered.done = True
    except _GaveUp as exc:
        error = chat_completions.error_body(str(exc), "server_error", "timeout")
        yield chat_completions.server_sent_chunk(error)
        answered.done = True


async def _cancel_quietly(client: KernosClient, handle: RunHandle) -> None:
    try:
        record = await client.runs.get(handle.run_id)
        if not record.finished:
            await cancel_run(client, record, "chat completion cancelled: the client went away")
    except Exception:  # the stream is gone: the gateway's log says why
        log.exception("run %s: not cancelled after its client went away", handle.run_id)


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
