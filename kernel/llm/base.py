"""What every LLM backend offers the kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from kernos.kernel.syscalls import LLMRequest, LLMResponse

#: The finish reason of a generation stopped at the end of its time slice, to be continued.
SLICE_END = "slice"


class Snapshot(BaseModel):
    """A generation so far: what the activity heartbeats, and what a retry resumes from."""

    text: str = ""
    tokens: list[int] = []
    """Generated token ids, where the server reports them (llama.cpp, SGLang)."""
    counted: int = 0
    """Tokens generated, where the server sends text without ids (`openai`): its usage, or the
    streamed chunks until usage arrives."""

    @property
    def length(self) -> int:
        """Tokens generated so far."""
        return len(self.tokens) or self.counted


Progress = Callable[[Snapshot], None]
"""Called with the generation so far, so the activity can heartbeat it."""


class Placement(BaseModel):
    """How the kernel runs one generation on a server: its id there, urgency and slice."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = None
    """The server's request id (SGLang's `rid`), so a cancelled generation can be aborted."""
    priority: int | None = Field(default=None, ge=1, le=5)
    """Temporal's priority key (1 first), forwarded to servers that schedule by priority."""
    slice_tokens: int | None = Field(default=None, ge=1)
    """Stop after this many new tokens with finish reason `slice` (round-robin)."""


class PromptSize(BaseModel):
    """A prompt's length in the model's tokens, and the context window, where known."""

    tokens: int | None = None
    window: int | None = None


class LLMBackend(Protocol):
    """A server kind the kernel can generate with."""

    async def measure(self, request: LLMRequest) -> PromptSize:
        """The request's prompt in tokens (the server's tokenizer) and the context window."""
        ...

    async def chat(
        self,
        request: LLMRequest,
        progress: Progress,
        resume: Snapshot | None = None,
        placement: Placement | None = None,
    ) -> LLMResponse:
        """Generate the next assistant message, continuing `resume` where the backend can.

        Raise an LLMError subclass on failure.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def token_budget(
    max_tokens: int | None, generated: int, slice_tokens: int | None
) -> tuple[int | None, bool]:
    """How many new tokens the next request may generate, and whether the slice is the bound.

    `None` means no bound of the kernel's: the server's own limit applies.
    """
    remaining = None if max_tokens is None else max(0, max_tokens - generated)
    if slice_tokens is not None and (remaining is None or slice_tokens < remaining):
        return slice_tokens, True
    return remaining, False
