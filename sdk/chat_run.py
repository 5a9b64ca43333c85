"""One chat-completions request as a kernos run.

What the gateway's OpenAI-compatible endpoint admits for each request it takes
(`kernos.gateway_openai`).

The run's task is the request as the kernel's `LLMRequest` (JSON), made from the body by the
gateway; its output is the kernel's `LLMResponse` (JSON), which the gateway answers as OpenAI's
API answers. The run is one `llm.chat` syscall, decided, audited, scheduled and resumed after a
crash as any run's is, and it shows in `kernos ps` and the Temporal UI. Always registered
(`Settings` adds it as `CHAT_AGENT`), under a name no other agent may take.
"""

from __future__ import annotations

from pydantic import ValidationError

from kernos.adapters.kernel_tools import current_run
from kernos.agent import Agent
from kernos.kernel.config import CHAT_AGENT
from kernos.kernel.errors import InvalidRequest, first_problem
from kernos.kernel.syscalls import LLMRequest


class ChatCompletionRun(Agent):
    """Answers one chat-completions request with one `llm.chat`."""

    name = CHAT_AGENT
    description = "one request of the gateway's OpenAI-compatible endpoint"

    async def run(self, task: str) -> str:
        """The model's answer to the request in `task`, as the kernel's response (JSON)."""
        try:
            request = LLMRequest.model_validate_json(task)
        except ValidationError as exc:
            raise InvalidRequest(
                f"a {CHAT_AGENT} run's task is a chat request (LLMRequest): {first_problem(exc)}"
            ) from None
        # What the endpoint's requests never hold, refused from anyone who submits one directly:
        # the kernel's tools (the caller runs its own) and a conversation the kernel keeps.
        if request.tools or request.conversation is not None:
            raise InvalidRequest(
                f"a {CHAT_AGENT} run asks for a completion only: no kernel tools, no conversation"
            )
        reply = await current_run().llm_chat(request)
        return reply.model_dump_json()
