"""What the servers that take token ids share: a generation that resumes from its ids.

The prompt is rendered and tokenized by the server, generation continues from `prompt ids +
ids generated so far`, so nothing is re-tokenised at a cut (a crash, or the end of a time
slice), and with greedy decoding a resumed generation equals an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from kernos.kernel.errors import ContextTooLong
from kernos.kernel.llm.base import (
    SLICE_END,
    Placement,
    Progress,
    PromptSize,
    Snapshot,
    token_budget,
)
from kernos.kernel.llm.http import HTTPBackend, error_for_status, transport_errors
from kernos.kernel.llm.stops import first_stop
from kernos.kernel.syscalls import LLMRequest, LLMResponse, TokenUsage


class ResumableBackend(HTTPBackend):
    """A server with tokenize, detokenize and generate-from-ids endpoints."""

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._client.post(path, json=body)
        if response.status_code >= 400:
            raise error_for_status(self.where, response)
        return response.json()

    async def prompt_tokens(self, request: LLMRequest) -> tuple[list[int], int | None]:
        """The messages in the model's chat template as ids, and the context window if known."""
        raise NotImplementedError

    async def detokenize(self, tokens: list[int]) -> str:
        """The text of `tokens`."""
        raise NotImplementedError

    def stops(self, request: LLMRequest) -> list[str]:
        """Where the server stops the generation: the request's own stop strings."""
        return list(request.sampling.stop or [])

    async def measure(self, request: LLMRequest) -> PromptSize:
        """The prompt's ids counted, with the window the server reports."""
        with transport_errors(self.where):
            prompt, window = await self.prompt_tokens(request)
        return PromptSize(tokens=len(prompt), window=window)

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
        """Stream up to `max_new` ids (None: until the model stops) onto `done`.

        Report progress as ids arrive, set `usage.cached_input_tokens`, and return the
        server's finish reason.
        """
        raise NotImplementedError

    async def chat(
        self,
        request: LLMRequest,
        progress: Progress,
        resume: Snapshot | None = None,
        placement: Placement | None = None,
    ) -> LLMResponse:
        """Generate, continuing `resume` (its ids go after the prompt's) if given."""
        placement = placement or Placement()
        done = resume.model_copy(deep=True) if resume is not None else Snapshot()
        resumed_from = len(done.tokens)
        budget, sliced = token_budget(
            request.sampling.max_tokens, resumed_from, placement.slice_tokens
        )
        with transport_errors(self.where):
            prompt, window = await self.prompt_tokens(request)
            usage = TokenUsage(input_tokens=len(prompt) + resumed_from)
            if window is not None:
                room = window - usage.input_tokens
                if room <= 0:
                    generated = f" plus {resumed_from} generated" if resumed_from else ""
                    raise ContextTooLong(
                        f"{self.where}: the prompt is {len(prompt)} tokens{generated}, and the "
                        f"model's context window is {window} tokens"
                    )
                if budget is None or room < budget:
                    budget, sliced = room, False
            finish: str | None = "length"
            if budget != 0:
                input_ids = prompt + done.tokens
                finish = await self.generate(
                    request, input_ids, budget, done, placement, progress, usage
                )
                if finish == "length" and sliced:
                    finish = SLICE_END
            if resumed_from:
                # The cut may have fallen inside a character the server had not yet emitted.
                done.text = await self.detokenize(done.tokens)
                # Or inside a stop, which the server matches within one request only.
                stop = first_stop(done.text, self.stops(request))
                if stop is not None:
                    done.text, finish = done.text[:stop], "stop"
            usage.output_tokens += len(done.tokens)  # (plus what the backend discarded)
            response = LLMResponse(
                text=done.text,
                model=request.model,
                usage=usage,
                finish_reason=finish,
                resumed_from=resumed_from,
            )
            if finish != SLICE_END:
                response = await self.concluded(request, response, placement)
        return response

    async def concluded(
        self, request: LLMRequest, response: LLMResponse, placement: Placement
    ) -> LLMResponse:
        """A whole generation's reply as the kernel returns it (not a time slice's)."""
        return response
