"""Any OpenAI-compatible server (vLLM, hosted APIs, ...) over `/v1/chat/completions`.

Streaming with httpx; no retries of its own (Temporal's retry policy is the one retry loop).
Token counts come from the server's `usage`; where a server sends none, output tokens are
counted as streamed chunks and input tokens as unknown (0).

The chat API has no token ids, so a generation resumes by its text: the text so far goes back
as a final assistant message that the server continues (`text_resume`: llama.cpp prefills it by
default, vLLM with `continue_final_message`). The server re-tokenises that text, so the cut can
fall differently than in an uninterrupted generation; the `llamacpp` and `sglang` kinds resume
by ids and are exact. With `text_resume = "none"` (hosted APIs, which cannot continue a
message) a retried generation starts over and a round-robin time slice does not cut it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ValidationError

from kernos.kernel.errors import LLMUnavailable
from kernos.kernel.llm.base import (
    SLICE_END,
    Placement,
    Progress,
    PromptSize,
    Snapshot,
    token_budget,
)
from kernos.kernel.llm.http import HTTPBackend, error_for_status, transport_errors
from kernos.kernel.syscalls import LLMRequest, LLMResponse, TokenUsage, ToolCall

TextResume = Literal["none", "prefill", "continue_final_message"]


class OpenAIBackend(HTTPBackend):
    """Chat completions on an OpenAI-compatible server."""

    def __init__(
        self,
        *args: Any,
        context_window: int | None = None,
        text_resume: TextResume = "none",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.context_window = context_window
        self.text_resume = text_resume

    async def measure(self, request: LLMRequest) -> PromptSize:
        """Nothing counts tokens before a call here: the window is the configured one."""
        return PromptSize(window=self.context_window)

    def _body(
        self, request: LLMRequest, resume: Snapshot | None, max_tokens: int | None
    ) -> dict[str, Any]:
        messages = [message.wire() for message in request.messages]
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(request.sampling.model_dump(exclude_none=True))
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if resume is not None:
            messages.append({"role": "assistant", "content": resume.text})
            if self.text_resume == "continue_final_message":
                body |= {"continue_final_message": True, "add_generation_prompt": False}
        if request.tool_specs:
            body["tools"] = [spec.wire() for spec in request.tool_specs]
            body["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.response_format.name,
                    "schema": request.response_format.json_schema,
                    "strict": True,
                },
            }
        return body

    async def chat(
        self,
        request: LLMRequest,
        progress: Progress,
        resume: Snapshot | None = None,
        placement: Placement | None = None,
    ) -> LLMResponse:
        """Stream a chat completion, continuing `resume`'s text where the server can."""
        where = self.where
        if self.text_resume == "none" or (resume is not None and not resume.text):
            resume = None
        slice_tokens = (
            None if self.text_resume == "none" or placement is None else (placement.slice_tokens)
        )
        before = resume.length if resume is not None else 0
        budget, sliced = token_budget(request.sampling.max_tokens, before, slice_tokens)
        prefix = resume.text if resume is not None else ""
        if budget == 0:  # an earlier attempt generated all it was allowed
            return LLMResponse(
                text=prefix, model=request.model, usage=TokenUsage(output_tokens=before),
                finish_reason="length",
                resumed_from=before,
            )  # fmt: skip
        parts: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        usage: TokenUsage | None = None
        finish_reason: str | None = None
        body = self._body(request, resume, budget)
        with transport_errors(where):
            async with self._client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for_status(where, response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = _stream_chunk(where, data)
                    if chunk.get("error"):
                        raise LLMUnavailable(f"{where} failed mid-stream: {chunk['error']}")
                    for choice in chunk.get("choices") or []:
                        _add_tool_call_deltas(calls, (choice.get("delta") or {}).get("tool_calls"))
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            parts.append(content)
                            progress(
                                Snapshot(text=prefix + "".join(parts), counted=before + len(parts))
                            )
                        finish_reason = choice.get("finish_reason") or finish_reason
                    if chunk.get("usage"):
                        usage = TokenUsage(
                            input_tokens=chunk["usage"].get("prompt_tokens") or 0,
                            output_tokens=chunk["usage"].get("completion_tokens") or 0,
                        )
        usage = usage or TokenUsage(output_tokens=len(parts))
        # As on the id-resuming kinds: the text so far is read again as input, and the output
        # is the whole generation's.
        usage.output_tokens += before
        if finish_reason == "length" and sliced:
            finish_reason = SLICE_END
        text = prefix + "".join(parts)
        if usage.output_tokens != before + len(parts):
            progress(Snapshot(text=text, counted=usage.output_tokens))  # the server's count
        return LLMResponse(
            text=text,
            model=request.model,
            usage=usage,
            finish_reason=finish_reason,
            resumed_from=before,
            tool_calls=_tool_calls(where, calls),
        )


def _add_tool_call_deltas(calls: dict[int, dict[str, str]], deltas: Any) -> None:
    """Accumulate streamed tool calls: each delta adds to the call at its index."""
    for delta in deltas or []:
        call = calls.setdefault(int(delta.get("index", 0)), {"id": "", "name": "", "arguments": ""})
        function = delta.get("function") or {}
        call["id"] = delta.get("id") or call["id"]
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""


def _tool_calls(where: str, calls: dict[int, dict[str, str]]) -> list[ToolCall]:
    try:
        return [
            ToolCall(
                id=call["id"] or f"call-{index}", name=call["name"], arguments=call["arguments"]
            )
            for index, call in sorted(calls.items())
        ]
    except ValidationError as exc:
        raise LLMUnavailable(
            f"{where} sent a malformed tool call: {exc.errors()[0]['msg']}"
        ) from exc


def _stream_chunk(where: str, data: str) -> dict[str, Any]:
    """One server-sent event's chunk of a streamed completion."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise LLMUnavailable(f"{where} sent a malformed stream chunk: {exc}") from exc
    if not isinstance(chunk, dict):
        raise LLMUnavailable(f"{where} sent a stream chunk that is not an object: {data[:200]}")
    return chunk
