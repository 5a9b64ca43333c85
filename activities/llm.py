"""`llm.chat`: a generation on one LLM instance."""

from __future__ import annotations

from temporalio import activity

from kernos.activities.heartbeat import heartbeating
from kernos.kernel.llm.base import LLMBackend
from kernos.kernel.syscalls import LLMRequest, LLMResponse


class LLMActivities:
    """The LLM syscalls of one instance; its worker polls the model's pool queue."""

    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend

    @activity.defn(name="llm.chat")
    async def chat(self, request: LLMRequest) -> LLMResponse:
        """Generate the next assistant message, heartbeating the partial text."""
        async with heartbeating() as beat:
            return await self.backend.chat(request, lambda text: beat({"chars": len(text)}))
