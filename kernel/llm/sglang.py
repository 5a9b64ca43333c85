"""SGLang's native HTTP API: token ids in and out, so a generation resumes exactly.

`/tokenize` renders the chat with the model's template and returns its ids with the model's
context length; `/generate` takes `input_ids` (prompt ids + ids generated so far), streams the
output ids, and carries the kernel's `rid` and `priority`; `/abort_request` stops a cancelled
generation on the GPU; `/detokenize` turns a resumed generation's ids back into text. SGLang's
radix cache keeps the resumed prefix, so a continuation costs little prefill (`cached_tokens`).

Field names and error shapes follow SGLang 0.5 (`GenerateReqInput`, `SamplingParams`, the
`meta_info` of its outputs, `FINISH_*` reasons). Streams are cumulative by default and deltas
with `--incremental-streaming-output`; both are read. Priority is forwarded as Temporal's key
(1 first), which is SGLang's order only with `--schedule-low-priority-values-first`: start the
server as `kernos llm serve --kind sglang` does, or set `priority_scheduling = false` on the
instance for a server without `--enable-priority-scheduling` (it refuses prioritised requests).

Native tool calling (`tool_calling = "native"`) stays on these endpoints, so it resumes exactly
too: `/tokenize` renders the tools into the prompt with the model's own chat template, and once
the generation ends `/parse_function_call` reads the calls out of its text with the server's
tool-call parser. `tool_choice = "required"` reaches the template only: unlike the kernel's
constrained decoding, nothing forces the model to call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from contextlib import suppress
from typing import Any

import httpx
from pydantic import ValidationError

from kernos.kernel.errors import ContextTooLong, LLMBadRequest, LLMError, LLMUnavailable
from kernos.kernel.llm.base import Placement, Progress, Snapshot
from kernos.kernel.llm.http import error_for_status
from kernos.kernel.llm.resumable import ResumableBackend
from kernos.kernel.syscalls import LLMRequest, LLMResponse, TokenUsage, ToolCall


class SGLangBackend(ResumableBackend):
    """An SGLang server (`python -m sglang.launch_server`)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        api_key: str | None = None,
        priority_scheduling: bool = True,
        tool_call_parser: str | None = None,
        read_timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            name, base_url, api_key=api_key, read_timeout_s=read_timeout_s, transport=transport
        )
        self.priority_scheduling = priority_scheduling
        self.tool_call_parser = tool_call_parser

    async def prompt_tokens(self, request: LLMRequest) -> tuple[list[int], int | None]:
        """The messages (and tools) in the model's chat template as ids, and the context length."""
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [message.wire() for message in request.messages],
        }
        if request.tool_specs:
            body["tools"] = [spec.wire() for spec in request.tool_specs]
            body["tool_choice"] = request.tool_choice
        tokenized = await self._post("/tokenize", body)
        return [int(token) for token in tokenized["tokens"]], int(tokenized["max_model_len"])

    async def concluded(
        self, request: LLMRequest, response: LLMResponse, placement: Placement
    ) -> LLMResponse:
        """The reply with the calls the server's tool-call parser finds in it (native tools)."""
        if not request.tool_specs or not response.text:
            return response
        parsed = await self._post(
            "/parse_function_call",
            {
                "text": response.text,
                "tools": [spec.wire() for spec in request.tool_specs],
                "tool_call_parser": await self._parser(),
            },
        )
        calls = parsed.get("calls") if isinstance(parsed, dict) else None
        if not calls:
            return response
        # Ids unique in the run: SGLang's parser gives none, and the rid is the syscall's.
        stem = hashlib.sha256((placement.request_id or "").encode()).hexdigest()[:12]
        try:
            found = [
                ToolCall(
                    id=f"call-{stem}-{number}",
                    name=call["name"],
                    arguments=str(call.get("parameters") or "{}"),
                )
                for number, call in enumerate(calls)
            ]
        except (KeyError, TypeError, ValidationError):
            # A name no tool could have, or arguments over any limit: as with constrained
            # decoding, the model's text stands as its reply.
            return response
        text = str(parsed.get("normal_text") or "")
        return response.model_copy(update={"text": text, "tool_calls": found})

    async def _parser(self) -> str:
        """The configured tool-call parser, or the one the server says it runs."""
        if self.tool_call_parser is None:
            info = await self._client.get("/model_info")
            if info.status_code >= 400:
                raise error_for_status(self.where, info)
            parser = (info.json() or {}).get("tool_call_parser")
            if not parser:
                raise LLMBadRequest(
                    f"{self.where} runs no tool-call parser, so it cannot call tools natively: "
                    "start it with --tool-call-parser (kernos llm serve does), or set the "
                    "instance's tool_calling = 'constrained'"
                )
            self.tool_call_parser = str(parser)
        return self.tool_call_parser

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of `tokens`, from `/detokenize`."""
        return str((await self._post("/detokenize", {"tokens": tokens}))["text"])

    def _body(
        self, request: LLMRequest, input_ids: list[int], max_new: int, placement: Placement
    ) -> dict[str, Any]:
        sampling = request.sampling
        params: dict[str, Any] = {"max_new_tokens": max_new}
        for key, value in (
            ("temperature", sampling.temperature),
            ("top_p", sampling.top_p),
            ("stop", self.stops(request) or None),
            ("sampling_seed", sampling.seed),
        ):
            if value is not None:
                params[key] = value
        if request.response_format is not None:
            # SGLang takes the schema as a JSON string.
            params["json_schema"] = json.dumps(request.response_format.json_schema)
        body: dict[str, Any] = {"input_ids": input_ids, "sampling_params": params, "stream": True}
        if placement.request_id is not None:
            body["rid"] = placement.request_id
        if placement.priority is not None and self.priority_scheduling:
            body["priority"] = placement.priority
        return body

    async def generate(
        self,
        request: LLMRequest,
        input_ids: list[int],
        max_new: int | None,
        done: Snapshot,
        placement: Placement,
        progress: Progress,
        usage: TokenUsage,
    ) -> str | None:
        """Stream `/generate` from the ids, with the kernel's `rid` and priority."""
        assert max_new is not None, "the context window always bounds a generation on SGLang"
        body = self._body(request, input_ids, max_new, placement)
        base_tokens, base_text = list(done.tokens), done.text
        new_tokens: list[int] = []
        new_text = ""
        try:
            async with self._client.stream("POST", "/generate", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for_status(self.where, response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError as exc:
                        raise LLMUnavailable(f"{self.where} sent a malformed chunk: {exc}") from exc
                    if chunk.get("error"):
                        raise self._stream_error(chunk["error"])
                    meta = chunk.get("meta_info") or {}
                    ids = [int(token) for token in chunk.get("output_ids") or []]
                    text = chunk.get("text") or ""
                    if _cumulative(ids, new_tokens, meta.get("completion_tokens")):
                        new_tokens, new_text = ids, text or new_text
                    else:
                        new_tokens, new_text = new_tokens + ids, new_text + text
                    done.tokens = base_tokens + new_tokens
                    done.text = base_text + new_text
                    if ids:
                        progress(done)
                    usage.cached_input_tokens = int(meta.get("cached_tokens") or 0)
                    reason = meta.get("finish_reason")
                    if isinstance(reason, dict):
                        return self._finish(reason)
        except asyncio.CancelledError:
            # Closing the stream makes SGLang abort too, but only once it notices; say so now.
            if placement.request_id is not None:
                await asyncio.shield(self._abort(placement.request_id))
            raise
        return None

    def _finish(self, reason: dict[str, Any]) -> str:
        kind = str(reason.get("type"))
        if kind != "abort":
            return kind
        raise _error(
            reason.get("status_code"),
            f"{self.where} aborted the generation: {reason.get('message') or 'aborted'}",
        )

    def _stream_error(self, error: Any) -> LLMError:
        if not isinstance(error, dict):
            return LLMUnavailable(f"{self.where} failed mid-stream: {error}")
        return _error(
            error.get("code"), f"{self.where} refused the request: {error.get('message')}"
        )

    async def _abort(self, request_id: str) -> None:
        # Best effort: the server also aborts once it sees the stream closed.
        with suppress(httpx.HTTPError, TimeoutError):
            await asyncio.wait_for(
                self._client.post("/abort_request", json={"rid": request_id}), 5.0
            )


def _cumulative(ids: list[int], so_far: list[int], completion_tokens: Any) -> bool:
    """Whether a chunk repeats the whole output so far, or is a delta.

    SGLang streams cumulatively by default, deltas with `--incremental-streaming-output`.
    A cumulative chunk holds at least `completion_tokens` ids (more when SGLang serialises its
    live list after further steps); after the first chunk a delta always holds fewer.
    """
    if isinstance(completion_tokens, int):
        return len(ids) >= completion_tokens
    return ids[: len(so_far)] == so_far and len(ids) >= len(so_far)


def _error(status: Any, message: str) -> LLMError:
    """The kernel error for an SGLang abort or stream error: 4xx is the request's fault."""
    code = int(status) if isinstance(status, int | str) and str(status).isdigit() else 500
    if 400 <= code < 500 and code not in (408, 429):
        if "context length" in message:
            return ContextTooLong(message)
        return LLMBadRequest(f"{message} (status {code})")
    return LLMUnavailable(message)
