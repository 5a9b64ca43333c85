"""What agent authors subclass: `class MyAgent(Agent)` with `async def run(self, task)`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from kernos.kernel.errors import AccessDenied, InvalidRequest, first_problem
from kernos.kernel.syscall_table import (
    CONVERSATION_OPEN,
    MEMORY_ADD,
    MEMORY_DELETE,
    MEMORY_GET,
    MEMORY_LIST,
    MEMORY_SEARCH,
    MEMORY_UPDATE,
    STORAGE_DELETE,
    STORAGE_LIST,
    STORAGE_READ,
    STORAGE_ROLLBACK,
    STORAGE_SEARCH,
    STORAGE_VERSIONS,
    STORAGE_WRITE,
    syscall_of,
)
from kernos.kernel.syscalls import (
    CompactRequest,
    ConversationOpen,
    ConversationRef,
    Encoding,
    FileContent,
    FileHit,
    FileInfo,
    FileVersion,
    JSONSchemaFormat,
    LLMRequest,
    LLMResponse,
    MemoryAdd,
    MemoryAdded,
    MemoryDelete,
    MemoryGet,
    MemoryItem,
    MemoryList,
    MemorySearch,
    MemoryUpdate,
    Message,
    MetadataValue,
    RunSpec,
    Sampling,
    StorageDelete,
    StorageList,
    StorageRead,
    StorageRollback,
    StorageSearch,
    StorageVersions,
    StorageWrite,
    SyscallRequest,
    ToolCall,
    ToolCallRequest,
    ToolResult,
)
from kernos.workflows.dispatcher import SyscallDispatcher

MessageLike = Message | Mapping[str, str]
Structured = TypeVar("Structured", bound=BaseModel)


Request = TypeVar("Request", bound=SyscallRequest)


def _request(cls: type[Request], **fields: Any) -> Request:
    """The request, or InvalidRequest naming what is wrong with it (agent code can catch it)."""
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise InvalidRequest(f"{syscall_of(cls).name}: {first_problem(exc)}") from None


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
        conversation: ConversationRef | None = None,
        tools: Sequence[str] = (),
        tool_choice: Literal["auto", "required"] = "auto",
    ) -> LLMResponse:
        """Generate the next assistant message for `messages` (dicts or Message).

        With a `conversation`, `messages` are its new turn: the model sees the whole
        conversation, the kernel keeps both the turn and the reply, and once the conversation
        passes the kernel's threshold its older turns are compacted (`llm.compact`).
        With `tools` (registered names), the reply's `tool_calls` are the calls the model made;
        `self.tools.loop` runs them and gives the results back.
        """
        default = conversation.model if conversation else self._dispatcher.run.spec.model
        request = _request(
            LLMRequest,
            model=model or default or "",
            messages=[m if isinstance(m, Message) else dict(m) for m in messages],
            sampling=Sampling(temperature=temperature, max_tokens=max_tokens, stop=stop, seed=seed),
            response_format=response_format,
            conversation=conversation.id if conversation else None,
            tools=list(tools),
            tool_choice=tool_choice,
        )
        response = await self._dispatcher.llm_chat(request)
        if (
            conversation is not None
            and response.compact_at is not None
            and (response.context_tokens or 0) >= response.compact_at
        ):
            await self._dispatcher.llm_compact(
                CompactRequest(conversation=conversation.id, model=request.model)
            )
        return response

    async def say(
        self, conversation: ConversationRef, text: str, *, max_tokens: int | None = None
    ) -> LLMResponse:
        """The user's turn `text` in `conversation`, and the model's reply."""
        return await self.chat(
            [{"role": "user", "content": text}], conversation=conversation, max_tokens=max_tokens
        )

    async def structured(
        self,
        messages: Sequence[MessageLike],
        schema: type[Structured],
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Structured:
        """Generate an answer constrained to `schema`'s JSON schema and parse it into `schema`.

        Servers that decode under the schema (llama.cpp, SGLang, vLLM) return valid JSON even
        from small models; a reply that still fails validation raises InvalidRequest.
        """
        response = await self.chat(
            messages,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
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


class ToolLoopResult(BaseModel):
    """What the function-calling loop came to."""

    reply: LLMResponse
    """The model's final answer."""
    messages: list[Message]
    """The whole exchange: the messages given, then each turn's calls and results."""
    results: list[ToolResult]
    """Every tool call's result, in order."""
    rounds: int
    """Turns in which the model called tools."""


class Tools:
    """The kernel's tools: each call is a `tool.call` syscall on `tool:<name>`.

    Tools run on kernel workers, never here: agent code names a tool and its arguments, the
    kernel validates them against the tool's schema and runs it once per call.
    """

    def __init__(self, dispatcher: SyscallDispatcher, llm: LLM) -> None:
        self._dispatcher = dispatcher
        self._llm = llm

    async def call(
        self, name: str, arguments: Mapping[str, Any] | None = None, /, **more: Any
    ) -> ToolResult:
        """Call tool `name` with `arguments` (and keyword arguments); AccessDenied if denied."""
        try:
            text = json.dumps({**(arguments or {}), **more})
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"arguments of tool {name!r} are not JSON: {exc}") from None
        return await self._dispatcher.tool_call(
            _request(ToolCallRequest, name=name, arguments=text)
        )

    async def run_calls(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Every call of one turn, at once, as results the model can read.

        What the model got wrong (a denied or unknown tool, a malformed call) comes back as an
        error result, not an exception.
        """
        return list(await asyncio.gather(*(self._run(call) for call in calls)))

    async def _run(self, call: ToolCall) -> ToolResult:
        try:
            request = _request(
                ToolCallRequest, name=call.name, arguments=call.arguments, call_id=call.id
            )
            return await self._dispatcher.tool_call(request)
        except (AccessDenied, InvalidRequest) as exc:
            return ToolResult(
                call_id=call.id, name=call.name, ok=False, content=str(exc),
                error_type=type(exc).__name__,
            )  # fmt: skip

    async def loop(
        self,
        messages: Sequence[MessageLike],
        *,
        tools: Sequence[str],
        model: str | None = None,
        max_rounds: int = 8,
        max_tokens: int | None = None,
        temperature: float | None = None,
        start_with_tool: bool = False,
    ) -> ToolLoopResult:
        """The function-calling loop: the model calls tools, sees their results, and answers.

        Each turn's calls run in parallel. After `max_rounds` turns with calls, the model is
        asked once more without tools, so the loop always ends with an answer.
        `start_with_tool`: the first turn must call a tool (`tool_choice="required"`).
        """
        try:
            transcript = [
                m if isinstance(m, Message) else Message.model_validate(dict(m)) for m in messages
            ]
        except ValidationError as exc:
            raise InvalidRequest(f"messages: {first_problem(exc)}") from None
        results: list[ToolResult] = []
        rounds = 0
        while True:
            offered = tools if rounds < max_rounds else ()
            reply = await self._llm.chat(
                transcript, model=model, tools=offered, max_tokens=max_tokens,
                temperature=temperature,
                tool_choice="required" if start_with_tool and rounds == 0 and offered else "auto",
            )  # fmt: skip
            if not reply.tool_calls:
                return ToolLoopResult(
                    reply=reply, messages=transcript, results=results, rounds=rounds
                )
            rounds += 1
            turn = await self.run_calls(reply.tool_calls)
            results += turn
            transcript = [
                *transcript,
                Message(role="assistant", content=reply.text, tool_calls=reply.tool_calls),
                *(result.message() for result in turn),
            ]


class Conversations:
    """Conversations kept by the kernel: the agent holds a reference, never the messages."""

    def __init__(self, dispatcher: SyscallDispatcher) -> None:
        self._dispatcher = dispatcher

    async def open(self, *, system: str | None = None, model: str | None = None) -> ConversationRef:
        """Start a conversation with an optional system prompt, on `model` (the run's default)."""
        chosen = model or self._dispatcher.run.spec.model or ""
        request = ConversationOpen(model=chosen, system=system)
        return await self._dispatcher.call(CONVERSATION_OPEN, request, chosen)


class Memory:
    """What an agent remembers across runs: items found by meaning, kept by the kernel.

    Without `scope` or `agent` a call uses the agent's own memory (in its tenant). `scope`
    names a shared scope and `agent` another agent's own memory (to read); both are open only
    where a policy allows (`memory:shared/<scope>`, `memory:agent/<agent>`).
    """

    def __init__(self, dispatcher: SyscallDispatcher) -> None:
        self._dispatcher = dispatcher

    def _where(self, scope: str | None, agent: str | None) -> dict[str, str | None]:
        # Naming itself is its own memory, not another agent's (which policy may close).
        own = agent is not None and agent == self._dispatcher.run.spec.agent
        return {"scope": scope, "agent": None if own else agent}

    async def add(
        self,
        content: str,
        *,
        metadata: Mapping[str, MetadataValue] | None = None,
        scope: str | None = None,
    ) -> MemoryAdded:
        """Remember `content`; past the agent's quota its least recently used items go."""
        request = _request(MemoryAdd, content=content, metadata=dict(metadata or {}), scope=scope)
        return await self._dispatcher.call(MEMORY_ADD, request)

    async def search(
        self,
        query: str,
        *,
        k: int = 5,
        filter: Mapping[str, MetadataValue] | None = None,
        min_score: float | None = None,
        scope: str | None = None,
        agent: str | None = None,
    ) -> list[MemoryItem]:
        """The `k` items nearest in meaning to `query`, best first (`score`: cosine)."""
        request = _request(
            MemorySearch,
            query=query,
            k=k,
            filter=dict(filter or {}),
            min_score=min_score,
            **self._where(scope, agent),
        )
        found = await self._dispatcher.call(MEMORY_SEARCH, request, f"k={k}")
        return found.items

    async def get(
        self, id: str, *, scope: str | None = None, agent: str | None = None
    ) -> MemoryItem:
        """One item by id; NotFound if the scope does not hold it."""
        request = _request(MemoryGet, id=id, **self._where(scope, agent))
        return await self._dispatcher.call(MEMORY_GET, request)

    async def update(
        self,
        id: str,
        *,
        content: str | None = None,
        metadata: Mapping[str, MetadataValue] | None = None,
        scope: str | None = None,
    ) -> MemoryItem:
        """Replace an item's content (embedded again), its metadata, or both."""
        request = _request(
            MemoryUpdate,
            id=id,
            content=content,
            metadata=None if metadata is None else dict(metadata),
            scope=scope,
        )
        return await self._dispatcher.call(MEMORY_UPDATE, request)

    async def delete(self, id: str, *, scope: str | None = None) -> bool:
        """Forget an item; False if it was not there."""
        request = _request(MemoryDelete, id=id, scope=scope)
        deleted = await self._dispatcher.call(MEMORY_DELETE, request)
        return deleted.deleted

    async def list(
        self,
        *,
        filter: Mapping[str, MetadataValue] | None = None,
        limit: int = 50,
        before: str | None = None,
        scope: str | None = None,
        agent: str | None = None,
    ) -> list[MemoryItem]:
        """A page of items, newest first; pass the last id as `before` for the next page."""
        request = _request(
            MemoryList,
            filter=dict(filter or {}),
            limit=limit,
            before=before,
            **self._where(scope, agent),
        )
        found = await self._dispatcher.call(MEMORY_LIST, request)
        return found.items


class Storage:
    """The agent's files: versioned, in its tenant's namespace for it, kept by the kernel.

    Paths are relative (`notes/today.md`); every write is a version, a delete is undone by a
    rollback. Text by default; pass `encoding="base64"` for bytes.
    """

    def __init__(self, dispatcher: SyscallDispatcher) -> None:
        self._dispatcher = dispatcher

    async def write(
        self,
        path: str,
        content: str,
        *,
        expected_version: int | None = None,
        encoding: Encoding = "utf-8",
    ) -> FileVersion:
        """Write a new version of `path`.

        With `expected_version`, only over that version (0: a new file), else VersionConflict.
        """
        request = _request(
            StorageWrite, path=path, content=content, expected_version=expected_version,
            encoding=encoding,
        )  # fmt: skip
        return await self._dispatcher.call(STORAGE_WRITE, request, path)

    async def read(
        self, path: str, *, version: int | None = None, encoding: Encoding = "utf-8"
    ) -> FileContent:
        """The file's latest version, or `version`; NotFound if it is not there (or deleted)."""
        request = _request(StorageRead, path=path, version=version, encoding=encoding)
        return await self._dispatcher.call(STORAGE_READ, request, path)

    async def search(self, query: str, *, k: int = 5, prefix: str = "") -> list[FileHit]:
        """Files under `prefix` whose latest content is nearest in meaning to `query`."""
        request = _request(StorageSearch, query=query, k=k, prefix=prefix)
        found = await self._dispatcher.call(STORAGE_SEARCH, request, f"k={k}")
        return found.files

    async def versions(self, path: str) -> list[FileVersion]:
        """Every version of the file, oldest first."""
        request = _request(StorageVersions, path=path)
        found = await self._dispatcher.call(STORAGE_VERSIONS, request)
        return found.versions

    async def rollback(self, path: str, version: int) -> FileVersion:
        """A new version with `version`'s content; recovers a deleted file."""
        request = _request(StorageRollback, path=path, version=version)
        return await self._dispatcher.call(STORAGE_ROLLBACK, request)

    async def delete(self, path: str) -> bool:
        """Mark the file deleted; False if it already was."""
        request = _request(StorageDelete, path=path)
        deleted = await self._dispatcher.call(STORAGE_DELETE, request)
        return deleted.deleted

    async def list(
        self, prefix: str = "", *, include_deleted: bool = False, limit: int = 100
    ) -> list[FileInfo]:
        """Files whose path starts with `prefix`, by path."""
        request = _request(StorageList, prefix=prefix, include_deleted=include_deleted, limit=limit)
        listed = await self._dispatcher.call(STORAGE_LIST, request)
        return listed.files


class Agent:
    """An agent: deterministic code whose every request for a resource is a syscall.

    Subclasses set `name` (the name clients run it by) and implement `run`. The code runs in a
    Temporal workflow: no I/O, no clocks, no randomness of its own; use the syscalls.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, dispatcher: SyscallDispatcher) -> None:
        self.llm = LLM(dispatcher)
        self.conversations = Conversations(dispatcher)
        self.memory = Memory(dispatcher)
        self.storage = Storage(dispatcher)
        self.tools = Tools(dispatcher, self.llm)
        self.run_id: str = dispatcher.run.run_id
        self.spec: RunSpec = dispatcher.run.spec

    async def run(self, task: str) -> str:
        """Carry out `task` and return the answer."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")


State = TypeVar("State", bound=BaseModel)


class Done(BaseModel):
    """What a step agent's `step` returns when the run is over."""

    output: str


class StepAgent(Agent, Generic[State]):
    """A long-lived agent: its state is a pydantic model, advanced one step at a time.

    Between steps the kernel may continue the run as new (when Temporal suggests it, or past
    the kernel's `limits.continue_as_new_events`), carrying the state: everything the agent
    needs must be in it, conversations by reference (`ConversationRef`). Set `state_model`,
    implement `start` (the first state) and `step` (the next state, or `Done`).
    """

    state_model: ClassVar[type[BaseModel]]

    async def start(self, task: str) -> State:
        """The state the run begins in."""
        raise NotImplementedError(f"{type(self).__name__} does not implement start()")

    async def step(self, state: State) -> State | Done:
        """Advance by one step: the next state, or Done with the run's output."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")
