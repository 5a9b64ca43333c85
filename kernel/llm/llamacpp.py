"""llama.cpp's own endpoints: the prompt goes as token ids, so a generation resumes exactly.

`/apply-template` renders the chat with the model's template, `/tokenize` turns it into ids, and
`/completion` generates from `prompt ids + ids generated so far`, streaming each piece's ids. An
interrupted generation (a worker crash, later a time slice) continues from its snapshot with
nothing re-tokenised at the cut; with greedy decoding the result equals an uninterrupted one,
token for token. The prompt cache (`cache_prompt`) makes the resumed prefill cheap.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from kernos.kernel.errors import LLMUnavailable
from kernos.kernel.llm.base import Progress, Snapshot
from kernos.kernel.llm.http import HTTPBackend, error_for_status
from kernos.kernel.syscalls import LLMRequest, LLMResponse, TokenUsage


class LlamaCppBackend(HTTPBackend):
    """A llama.cpp `llama-server`."""

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._client.post(path, json=body)
        if response.status_code >= 400:
            raise error_for_status(self.where, response)
        return response.json()

    async def prompt_tokens(self, request: LLMRequest) -> list[int]:
        """The request's messages in the model's chat template, as token ids."""
        messages = [message.model_dump() for message in request.messages]
        rendered = await self._post("/apply-template", {"messages": messages})
        tokenized = await self._post(
            "/tokenize", {"content": rendered["prompt"], "add_special": True, "parse_special": True}
        )
        return [int(token) for token in tokenized["tokens"]]

    def _body(self, request: LLMRequest, prompt: list[int], remaining: int) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "prompt": prompt,
            "n_predict": remaining,
            "stream": True,
            "return_tokens": True,
            "cache_prompt": True,
        }
        for key, value in (
            ("temperature", sampling.temperature),
            ("top_p", sampling.top_p),
            ("seed", sampling.seed),
            ("stop", sampling.stop),
        ):
            if value is not None:
                body[key] = value
        if request.response_format is not None:
            body["json_schema"] = request.response_format.json_schema
        return body

    async def chat(
        self, request: LLMRequest, progress: Progress, resume: Snapshot | None = None
    ) -> LLMResponse:
        """Generate, continuing `resume` (its token ids go after the prompt) if given."""
        done = resume.model_copy(deep=True) if resume is not None else Snapshot()
        resumed_from = len(done.tokens)
        limit = request.sampling.max_tokens
        try:
            prompt = await self.prompt_tokens(request)
            finish: str | None = "length" if limit is not None and resumed_from >= limit else None
            if finish is None:
                remaining = limit - resumed_from if limit is not None else -1
                finish = await self._stream(request, prompt, done, remaining, progress)
            if resumed_from:
                # The cut may have fallen inside a character the server had not yet emitted.
                detokenized = await self._post("/detokenize", {"tokens": done.tokens})
                done.text = str(detokenized["content"])
        except httpx.TimeoutException as exc:
            raise LLMUnavailable(f"{self.where} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise LLMUnavailable(f"cannot reach {self.where}: {exc}") from exc
        return LLMResponse(
            text=done.text,
            model=request.model,
            usage=TokenUsage(input_tokens=len(prompt), output_tokens=len(done.tokens)),
            finish_reason=finish,
            resumed_from=resumed_from,
        )

    async def _stream(
        self,
        request: LLMRequest,
        prompt: list[int],
        done: Snapshot,
        remaining: int,
        progress: Progress,
    ) -> str | None:
        body = self._body(request, prompt + done.tokens, remaining)
        finish = None
        async with self._client.stream("POST", "/completion", json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_for_status(self.where, response)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                try:
                    chunk = json.loads(line[5:])
                except json.JSONDecodeError as exc:
                    raise LLMUnavailable(f"{self.where} sent a malformed chunk: {exc}") from exc
                if chunk.get("error"):
                    raise LLMUnavailable(f"{self.where} failed mid-stream: {chunk['error']}")
                tokens = chunk.get("tokens") or []
                if tokens or chunk.get("content"):
                    done.tokens.extend(int(token) for token in tokens)
                    done.text += chunk.get("content") or ""
                    progress(done)
                if chunk.get("stop"):
                    finish = "length" if chunk.get("stop_type") == "limit" else "stop"
                    break
        return finish
