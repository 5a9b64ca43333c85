"""What agent authors subclass: `class MyAgent(Agent)` with `async def run(self, task)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from kernos.kernel.syscalls import LLMRequest, LLMResponse, Message, RunSpec, Sampling
from kernos.workflows.syscalls import SyscallDispatcher

MessageLike = Message | Mapping[str, str]


class LLM:
    """An agent's access to language models; every call is an `llm.chat` syscall."""

    def __init__(self, dispatcher: SyscallDispatcher) -> None:
        self._dispatcher = dispatcher

    async def chat(
        self,
        messages: Sequence[MessageLike],
        *,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> LLMResponse:
        """Generate the next assistant message for `messages` (dicts or Message)."""
        request = LLMRequest(
            model=model or self._dispatcher.run.spec.model or "",
            messages=[m if isinstance(m, Message) else Message.model_validate(m) for m in messages],
            sampling=Sampling(temperature=temperature, max_tokens=max_tokens, stop=stop, seed=seed),
        )
        return await self._dispatcher.llm_chat(request)


class Agent:
    """An agent: deterministic code whose every request for a resource is a syscall.

    Subclasses set `name` (the name clients run it by) and implement `run`. The code runs in a
    Temporal workflow: no I/O, no clocks, no randomness of its own; use the syscalls.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, dispatcher: SyscallDispatcher) -> None:
        self.llm = LLM(dispatcher)
        self.run_id: str = dispatcher.run.run_id
        self.spec: RunSpec = dispatcher.run.spec

    async def run(self, task: str) -> str:
        """Carry out `task` and return the answer."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")
