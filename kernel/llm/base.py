"""What every LLM backend offers the kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from kernos.kernel.syscalls import LLMRequest, LLMResponse

Progress = Callable[[str], None]
"""Called with the text generated so far, so the activity can heartbeat it."""


class LLMBackend(Protocol):
    """A server kind the kernel can generate with."""

    async def chat(self, request: LLMRequest, progress: Progress) -> LLMResponse:
        """Generate the next assistant message; raise an LLMError subclass on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
