"""A backend that answers from a script: for testing agents without a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kernos.kernel.errors import ScriptExhausted
from kernos.kernel.llm.base import Placement, Progress, PromptSize, Snapshot
from kernos.kernel.syscalls import LLMRequest, LLMResponse, TokenUsage

Reply = str | Callable[[LLMRequest], str]


def _count_tokens(text: str) -> int:
    # A whitespace word stands in for a token: stable, and close enough for accounting tests.
    return len(text.split())


class ScriptedBackend:
    """Replies with the script's entries in order, or echoes; counts its calls.

    With `script=None` every reply is derived from the last message, so any number of calls
    succeeds. With a script, asking past its end raises ScriptExhausted.
    """

    def __init__(
        self, script: Sequence[Reply] | None = None, *, context_window: int | None = None
    ) -> None:
        self._script = list(script) if script is not None else None
        self.context_window = context_window
        self.calls = 0
        self.requests: list[LLMRequest] = []

    async def chat(
        self,
        request: LLMRequest,
        progress: Progress,
        resume: Snapshot | None = None,
        placement: Placement | None = None,
    ) -> LLMResponse:
        """Reply with the next entry of the script (whole: there is nothing to resume)."""
        index = self.calls
        self.calls += 1
        self.requests.append(request)
        if self._script is None:
            text = f"scripted reply {index + 1} to: {request.messages[-1].content}"
        elif index < len(self._script):
            entry = self._script[index]
            text = entry(request) if callable(entry) else entry
        else:
            raise ScriptExhausted(
                f"the script has {len(self._script)} replies and call {index + 1} asked for more"
            )
        progress(Snapshot(text=text))
        prompt = " ".join(message.content for message in request.messages)
        return LLMResponse(
            text=text,
            model=request.model,
            usage=TokenUsage(input_tokens=_count_tokens(prompt), output_tokens=_count_tokens(text)),
            finish_reason="stop",
        )

    async def measure(self, request: LLMRequest) -> PromptSize:
        """The prompt's words, and the configured window."""
        prompt = " ".join(message.content for message in request.messages)
        return PromptSize(tokens=_count_tokens(prompt), window=self.context_window)

    async def aclose(self) -> None:
        """Nothing to release."""
