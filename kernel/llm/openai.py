"""Any OpenAI-compatible server (vLLM, hosted APIs, ...) over `/v1/chat/completions`.

Streaming with httpx; no retries of its own (Temporal's retry policy is the one retry loop).
Token counts come from the server's `usage`; where a server sends none, output tokens are
counted as streamed chunks and input tokens as unknown (0). The chat API has no way to continue
a half-written answer, so a retried generation starts over here, and a round-robin time slice
does not apply (the generation runs to its end); the `llamacpp` and `sglang` kinds resume.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from kernos.kernel.errors import LLMUnavailable
from kernos.kernel.llm.base import Placement, Progress, PromptSize, Snapshot
from kernos.kernel.llm.http import HTTPBackend, ServerUnreachable, error_for_status
from kernos.kernel.syscalls import LLMRequest, LLMResponse, TokenUsage


class OpenAIBackend(HTTPBackend):
    """Chat completions on an OpenAI-compatible server."""

    def __init__(self, *args: Any, context_window: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context_window = context_window

    async def measure(self, request: LLMRequest) -> PromptSize:
        """Nothing counts tokens before a call here: the window is the configured one."""
        return PromptSize(window=self.context_window)

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [message.model_dump() for message in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        body.update(request.sampling.model_dump(exclude_none=True))
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
        """Stream a chat completion, reporting progress as text arrives (from the start)."""
        where = self.where
        parts: list[str] = []
        usage: TokenUsage | None = None
        finish_reason: str | None = None
        try:
            async with self._client.stream(
                "POST", "/v1/chat/completions", json=self._body(request)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_for_status(where, response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise LLMUnavailable(f"{where} failed mid-stream: {chunk['error']}")
                    for choice in chunk.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            parts.append(content)
                            progress(Snapshot(text="".join(parts)))
                        finish_reason = choice.get("finish_reason") or finish_reason
                    if chunk.get("usage"):
                        usage = TokenUsage(
                            input_tokens=chunk["usage"].get("prompt_tokens") or 0,
                            output_tokens=chunk["usage"].get("completion_tokens") or 0,
                        )
        except httpx.TimeoutException as exc:
            raise LLMUnavailable(f"{where} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach {where}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise LLMUnavailable(f"{where} sent a malformed stream chunk: {exc}") from exc
        return LLMResponse(
            text="".join(parts),
            model=request.model,
            usage=usage or TokenUsage(output_tokens=len(parts)),
            finish_reason=finish_reason,
        )
