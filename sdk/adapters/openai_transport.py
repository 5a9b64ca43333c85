"""An OpenAI client inside a run: each chat completion it asks for is an `llm.chat` syscall.

Frameworks build OpenAI clients where no seam of theirs reaches: LangChain's `ChatOpenAI` made
inside a graph's node, `init_chat_model("openai:...")`, an `openai.AsyncOpenAI` in an agent's
own code. Below all of them is httpx's transport, and that is where this module sits: inside a
kernos run (`dispatcher.CURRENT` is set), a `POST .../chat/completions` is read as an
`LLMRequest` (`kernel/llm/chat_completions.py`), made a syscall of the run, and answered as the
server would have answered it, streamed or not. Nothing leaves the process; the client's base
URL and API key are ignored (the kernel's records say who asks and which servers serve).
Outside a run, the transport is httpx's own.

Any other request from inside a run is answered 400, naming what to use instead: a run reaches
nothing but its syscalls. This is a convenience, not the boundary: the confined pool has no
network, and code that goes around this module reaches nothing either.

The kernel's refusals come back as OpenAI's errors (403 for a denial, 400 for a bad request,
...), marked not to be retried, so the client does not ask twice; the kernel's own error rides
on the response (`KERNEL_ERROR`) so the run ends as that error when nothing handles it
(`workflows/framework_errors.py`). A synchronous client cannot wait for a syscall: its request
is refused, naming the async call to use.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import httpx
from temporalio.exceptions import is_cancelled_exception

from kernos.adapters.kernel_tools import current_run
from kernos.kernel.errors import (
    AccessDenied,
    InvalidRequest,
    KernosError,
    LLMRateLimited,
    NotFound,
    PayloadTooLarge,
)
from kernos.kernel.llm import chat_completions
from kernos.kernel.syscall_table import LLM_CHAT
from kernos.workflows.dispatcher import CURRENT
from kernos.workflows.framework_errors import KERNEL_ERROR


def _http_stacks() -> list[ModuleType]:
    """httpx, and its fork `httpx2` that openai>=3 is built on, where installed."""
    stacks = [httpx]
    with contextlib.suppress(ImportError):
        stacks.append(importlib.import_module("httpx2"))
    return stacks


#: Each stack's own transports, as they were before `install`, by stack.
_ORIGINAL: dict[str, tuple[Any, Any]] = {}


def _status(error: BaseException) -> int:
    if isinstance(error, PayloadTooLarge):
        return 413
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InvalidRequest):
        return 400
    if isinstance(error, LLMRateLimited):
        return 429
    if isinstance(error, AccessDenied):
        return 403
    return 500


def _response(request: Any, *args: Any, **kwargs: Any) -> Any:
    """A response of the HTTP stack `request` is of (httpx or httpx2).

    Its client reads no other.
    """
    stack = importlib.import_module(type(request).__module__.partition(".")[0])
    return stack.Response(*args, request=request, **kwargs)


def _refusal(request: Any, error: Exception) -> Any:
    """`error` as an OpenAI error response, not to be retried, carrying the error itself."""
    kind = type(error).__name__ if isinstance(error, KernosError) else "kernos_error"
    response = _response(
        request,
        _status(error),
        headers={"x-should-retry": "false", "content-type": "application/json"},
        json=chat_completions.error_body(str(error) or kind, kind),
    )
    response.extensions[KERNEL_ERROR] = error
    return response


async def answered(request: Any) -> Any:
    """The response to `request` from inside a run: a chat completion by syscall, or a refusal."""
    if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        return _refusal(request, InvalidRequest(
            f"{request.method} {request.url.path}: inside a kernos run an OpenAI client may ask "
            f"for chat completions only (each one an {LLM_CHAT.name} syscall); a run reaches "
            "nothing else but its syscalls"
        ))  # fmt: skip
    try:
        dispatcher = current_run()
    except InvalidRequest as exc:  # a client made to ask the kernel only, used outside a run
        return _refusal(request, exc)
    try:
        body = json.loads(await request.aread() or b"null")
        llm_request = chat_completions.request_from_body(body)
        reply = await dispatcher.llm_chat(llm_request)
    except asyncio.CancelledError:
        raise  # not an HTTP failure: the run is being cancelled
    except json.JSONDecodeError as exc:
        return _refusal(request, InvalidRequest(f"chat-completions body is not JSON: {exc}"))
    except Exception as exc:
        if is_cancelled_exception(exc):
            # Raised past the client (it retries Exceptions, not this), so no framework's
            # retry or fallback asks again once the run is cancelled.
            raise asyncio.CancelledError("the run was cancelled") from exc
        return _refusal(request, exc)
    made = f"chatcmpl-kernos-{dispatcher.syscalls}"
    if not body.get("stream"):
        return _response(request, 200, json=chat_completions.completion(reply, id=made, created=0))
    usage = chat_completions.include_usage(body)
    chunks = chat_completions.chunks(reply, id=made, created=0, include_usage=usage)
    return _response(
        request,
        200,
        headers={"content-type": "text/event-stream"},
        content=chat_completions.server_sent(chunks),
    )


def _governed_async(
    own: Callable[[Any, Any], Awaitable[Any]],
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle_async_request(self: Any, request: Any) -> Any:
        if CURRENT.get(None) is None:
            return await own(self, request)
        return await answered(request)

    return handle_async_request


def _governed_sync(own: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def handle_request(self: Any, request: Any) -> Any:
        if CURRENT.get(None) is None:
            return own(self, request)
        return _refusal(request, InvalidRequest(
            "a synchronous OpenAI client was called inside a kernos run, which cannot wait for "
            "a syscall there: use the async call (`await model.ainvoke(...)`, `AsyncOpenAI`) "
            "in `async def` code"
        ))  # fmt: skip

    return handle_request


def install() -> None:
    """Turn OpenAI clients' requests inside runs into syscalls, in this process (idempotent)."""
    for stack in _http_stacks():
        if stack.__name__ in _ORIGINAL:
            continue
        own_async = stack.AsyncHTTPTransport.handle_async_request
        own_sync = stack.HTTPTransport.handle_request
        _ORIGINAL[stack.__name__] = (own_async, own_sync)
        stack.AsyncHTTPTransport.handle_async_request = _governed_async(own_async)
        stack.HTTPTransport.handle_request = _governed_sync(own_sync)
