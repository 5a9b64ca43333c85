"""What agent authors subclass: `class MyAgent(Agent)` with `async def run(self, task)`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from kernos.kernel.errors import InvalidRequest
from kernos.kernel.syscalls import (
    JSONSchemaFormat,
    LLMRequest,
    LLMResponse,
    Message,
    RunSpec,
    Sampling,
)
from kernos.workflows.syscalls import SyscallDispatcher

MessageLike = Message | Mapping[str, str]
Structured = TypeVar("Structured", bound=BaseModel)


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
        response_format: JSONSchemaFormat | None = None,
    ) -> LLMResponse:
        """Generate the next assistant message for `messages` (dicts or Message)."""
        request = LLMRequest(
            model=model or self._dispatcher.run.spec.model or "",
            messages=[m if isinstance(m, Message) else Message.model_validate(m) for m in messages],
            sampling=Sampling(temperature=temperature, max_tokens=max_tokens, stop=stop, seed=seed),
            response_format=response_format,
        )
        return await self._dispatcher.llm_chat(request)

    async def structured(
        self,
        messages: Sequence[MessageLike],
        schema: type[Structured],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
    ) -> Structured:
        """Generate an answer constrained to `schema`'s JSON schema and parse it into `schema`.

        Servers that decode under the schema (llama.cpp, SGLang, vLLM) return valid JSON even
        from small models; a reply that still fails validation raises InvalidRequest.
        """
        response = await self.chat(
            messages,
            model=model,
            max_tokens=max_tokens,
            response_format=JSONSchemaFormat(
                name=schema.__name__[:64], json_schema=schema.model_json_schema()
            ),
        )
        try:
            return schema.model_validate_json(response.text)
        except ValidationError as exc:
            raise InvalidRequest(
                f"the model's answer does not fit {schema.__name__}: {exc.errors()[0]['msg']}"
            ) from exc


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
