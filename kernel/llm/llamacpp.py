"""llama.cpp's own endpoints: the prompt goes as token ids, so a generation resumes exactly.

`/apply-template` renders the chat with the model's template, `/tokenize` turns it into ids, and
`/completion` generates from `prompt ids + ids generated so far`, streaming each piece's ids. An
interrupted generation (a worker crash, the end of a time slice) continues from its snapshot with
nothing re-tokenised at the cut; with greedy decoding the result equals an uninterrupted one,
token for token. The prompt cache (`cache_prompt`) makes the resumed prefill cheap.

A generation also stops at the template's turn markers (`kernel/llm/stops.py`): a model without
a chat template of its own is served llama.cpp's fallback, whose markers it writes as text.
"""

from __future__ import annotations

import json
from typing import Any

from kernos.kernel.errors import LLMUnavailable
from kernos.kernel.llm.base import Placement, Progress, Snapshot
from kernos.kernel.llm.http import error_for_status
from kernos.kernel.llm.resumable import ResumableBackend
from kernos.kernel.llm.stops import PROBE, template_markers
from kernos.kernel.syscalls import LLMRequest, TokenUsage

#: A reply begun again starts with a character of text (no space, no marker's opening); the
#: one token sampled under it may be a whole word.
BEGUN = r"root ::= [^<|/ \t\r\n] [^\x00]*"


class LlamaCppBackend(ResumableBackend):
    """A llama.cpp `llama-server`."""

    _window: int | None = None
    _markers: list[str] | None = None

    def __init__(self, name: str, base_url: str, *, turn_markers: bool = True, **http: Any) -> None:
        super().__init__(name, base_url, **http)
        if not turn_markers:
            self._markers = []

    async def prompt_tokens(self, request: LLMRequest) -> tuple[list[int], int | None]:
        """The request's messages in the model's chat template as ids, and a slot's context.

        A slot's context is the server's `-c` divided among its parallel slots (`/props`).
        """
        messages = [message.wire() for message in request.messages]
        rendered = await self._post("/apply-template", {"messages": messages})
        tokenized = await self._post(
            "/tokenize", {"content": rendered["prompt"], "add_special": True, "parse_special": True}
        )
        if self._window is None:
            props = (await self._client.get("/props")).json()
            window = (props.get("default_generation_settings") or {}).get("n_ctx")
            self._window = int(window) if window else None
        if self._markers is None:
            probe = await self._post(
                "/apply-template", {"messages": [{"role": "user", "content": PROBE}]}
            )
            self._markers = template_markers(str(probe["prompt"]))
        return [int(token) for token in tokenized["tokens"]], self._window

    def stops(self, request: LLMRequest) -> list[str]:
        """The request's stop strings, then the template's turn markers.

        Under a JSON schema too: a small model that writes a marker inside one of its strings
        is ending its turn, and the cut JSON comes back as text (`calling.parse`) rather than
        a call that keeps the run looping to the end of its context.
        """
        stops = super().stops(request)
        return stops + [marker for marker in self._markers or [] if marker not in stops]

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of `tokens`, from `/detokenize`."""
        return str((await self._post("/detokenize", {"tokens": tokens}))["content"])

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
            ("stop", self.stops(request) or None),
        ):
            if value is not None:
                body[key] = value
        if request.response_format is not None:
            body["json_schema"] = request.response_format.json_schema
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
        """Stream `/completion` from the ids (n_predict -1: until the model stops).

        A model that does not know its template may close the turn before writing anything (a
        marker first, seen after a tool's answer). Such a reply is begun again with one token
        that starts with a character of text (`BEGUN`, a grammar), then the model goes on as it
        will, to the next marker: an answer rather than an empty one.
        """
        body = self._body(request, input_ids, -1 if max_new is None else max_new)
        base_tokens, base_text = list(done.tokens), done.text
        finish, stopped_at = await self._stream(body, done, progress, usage)
        if (
            stopped_at not in (self._markers or [])
            or done.text.strip()
            or request.response_format is not None  # its grammar begins the reply
        ):
            return finish
        # The closed turn was generated: charged, though not kept.
        usage.output_tokens += len(done.tokens) - len(base_tokens)
        done.tokens, done.text = list(base_tokens), base_text
        progress(done)
        finish, _ = await self._stream(
            {**body, "n_predict": 1, "grammar": BEGUN}, done, progress, usage
        )
        if finish != "length" or max_new == 1:
            return finish
        begun = {
            **body,
            "prompt": input_ids + done.tokens[len(base_tokens) :],
            "n_predict": -1 if max_new is None else max_new - 1,
        }
        finish, _ = await self._stream(begun, done, progress, usage)
        return finish

    async def _stream(
        self, body: dict[str, Any], done: Snapshot, progress: Progress, usage: TokenUsage
    ) -> tuple[str | None, str | None]:
        """One `/completion` onto `done`: its finish reason, and the stop string it ended at."""
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
                    timings = chunk.get("timings") or {}
                    usage.cached_input_tokens = int(timings.get("cache_n") or 0)
                    if chunk.get("stop_type") == "limit":
                        return "length", None
                    return "stop", chunk.get("stopping_word") or None
        return None, None
