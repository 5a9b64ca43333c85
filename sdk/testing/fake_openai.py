"""A small OpenAI-compatible chat server for tests.

It streams, records every request, and can be told to fail, to be slow, or to go away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from kernos.testing.fake_http import EventStream, JSONResponse, MiniHTTPServer, Request


@dataclass
class Recorded:
    """One request the server received."""

    body: dict[str, Any]
    completed: bool = False
    aborted: bool = False


@dataclass
class Failure:
    """An HTTP error to answer instead of a completion."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def default_reply(body: dict[str, Any]) -> str:
    """The answer to a request: its last message, quoted."""
    return "reply to: " + str(body["messages"][-1]["content"])


class FakeOpenAIServer:
    """`POST /v1/chat/completions`, streamed (SSE) or whole as asked, on 127.0.0.1."""

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str] = default_reply,
        *,
        token_delay_s: float = 0.0,
        port: int = 0,
        tool_calls: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.reply = reply
        #: For a request with `tools`: the calls to make (name, arguments), or none to answer.
        self.tool_calls = tool_calls
        self.token_delay_s = token_delay_s
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self.http = MiniHTTPServer({("POST", "/v1/chat/completions"): self._chat}, port=port)

    @property
    def base_url(self) -> str:
        """Its address, for a client."""
        return self.http.base_url

    async def start(self) -> FakeOpenAIServer:
        """Listen; itself, started."""
        await self.http.start()
        return self

    async def stop(self) -> None:
        """Stop listening."""
        await self.http.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def completed(self) -> list[Recorded]:
        """The requests it answered to the end."""
        return [r for r in self.requests if r.completed]

    async def _chat(self, request: Request) -> JSONResponse | EventStream:
        record = Recorded(request.body)
        self.requests.append(record)
        if self.failures:
            failure = self.failures.pop(0)
            return JSONResponse(
                {"error": {"message": failure.message}}, failure.status, failure.headers
            )

        if not record.body.get("stream"):
            return await self._whole(record)

        def aborted() -> None:
            record.aborted = True

        return EventStream(self._stream(record), on_disconnect=aborted)

    async def _whole(self, record: Recorded) -> JSONResponse:
        """The same answer as the stream's, taken as long, in one JSON completion."""
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        usage: dict[str, int] = {}
        async for chunk in self._stream(record):
            if chunk == "[DONE]":
                break
            choice = chunk["choices"][0]
            text.append(choice["delta"].get("content") or "")
            for delta in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(
                    delta["index"],
                    {"id": delta.get("id"), "type": "function",
                     "function": {"name": "", "arguments": ""}},
                )  # fmt: skip
                call["function"]["name"] += delta["function"].get("name") or ""
                call["function"]["arguments"] += delta["function"].get("arguments") or ""
            finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
        if calls:
            message["tool_calls"] = [calls[index] for index in sorted(calls)]
        used = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{len(self.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": record.body.get("model", ""),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {**usage, "total_tokens": used},
            }
        )

    async def _stream(self, record: Recorded) -> AsyncIterator[Any]:
        body = record.body
        messages = body["messages"]
        calls = self.tool_calls(body) if self.tool_calls and body.get("tools") else []
        if calls:
            # As OpenAI streams them: each call opens with its id and name, then its arguments
            # come in pieces.
            for index, call in enumerate(calls):
                arguments = json.dumps(call["arguments"])
                opening = {"index": index, "id": f"call_{index}", "type": "function",
                           "function": {"name": call["name"], "arguments": ""}}  # fmt: skip
                yield {"choices": [{"index": 0, "delta": {"tool_calls": [opening]}}]}
                for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                    delta = {"index": index, "function": {"arguments": piece}}
                    yield {"choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]}
            yield {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
            yield "[DONE]"
            record.completed = True
            return
        # A final assistant message is continued, as llama-server's prefill and vLLM's
        # `continue_final_message` do: the reply goes on after the text already written.
        prefix = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        asked = {**body, "messages": messages[:-1]} if prefix else body
        words = self.reply(asked).split(" ")
        pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]
        start = 0
        while prefix and "".join(pieces[:start]) != prefix:
            start += 1
            assert start <= len(pieces), f"{prefix!r} does not begin the reply"
        remaining = pieces[start:]
        limit = body.get("max_tokens")
        sent = remaining if limit is None else remaining[:limit]
        for piece in sent:
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield {"choices": [{"index": 0, "delta": {"content": piece}}]}
        # An assistant turn of tool calls may have no content (OpenAI's clients send null).
        prompt = sum(len((m.get("content") or "").split()) for m in messages)
        finish = "length" if len(sent) < len(remaining) else "stop"
        yield {
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(sent)},
        }
        yield "[DONE]"
        record.completed = True
