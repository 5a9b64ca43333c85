"""What every LLM backend offers the kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel

from kernos.kernel.syscalls import LLMRequest, LLMResponse


class Snapshot(BaseModel):
    """A generation so far: what the activity heartbeats, and what a retry resumes from."""

    text: str = ""
    tokens: list[int] = []
    """Generated token ids, where the server reports them (llama.cpp, SGLang)."""


Progress = Callable[[Snapshot], None]
"""Called with the generation so far, so the activity can heartbeat it."""


class LLMBackend(Protocol):
    """A server kind the kernel can generate with."""

    async def chat(
        self, request: LLMRequest, progress: Progress, resume: Snapshot | None = None
    ) -> LLMResponse:
        """Generate the next assistant message, continuing `resume` where the backend can.

        Raise an LLMError subclass on failure.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
