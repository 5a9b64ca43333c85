"""The LLM syscalls' types: messages, tools as the model sees them, requests and answers.

`llm.chat`, `llm.continue`, `llm.compact` and `conversation.open`.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kernos.kernel.syscalls.common import SyscallRequest, SyscallResponse, no_nul

#: A tool's name: what models call it by (OpenAI's function-name rule, starting with a letter).
TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
ToolName = Annotated[str, Field(pattern=TOOL_NAME.pattern)]
#: Characters of JSON the agent's own tools may take in one request: what the model is told.
MAX_AGENT_TOOLS_CHARS = 64 * 1024
"""A tool's name: what models call it by (OpenAI's function-name rule, starting with a letter)."""
MAX_TOOL_ARGUMENTS = 64 * 1024
"""Characters of a tool call's arguments that any request may carry; `[tools]
max_argument_bytes` is the kernel's limit below it."""


class ToolSpec(BaseModel):
    """What a model is told about a tool: the kernel's, from its registry."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        """The tool in OpenAI's format, as OpenAI-compatible servers and SGLang take it."""
        return {"type": "function", "function": self.model_dump()}


class ToolCall(BaseModel):
    """A model's request to call a tool, as the kernel parsed it from the model's output."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=128)
    name: ToolName
    arguments: str = Field(max_length=MAX_TOOL_ARGUMENTS)
    """The arguments as JSON text, exactly as the model wrote them (validated when called)."""


class Message(BaseModel):
    """One chat message in OpenAI's format."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall] = []
    """An assistant message's tool calls."""
    tool_call_id: str | None = None
    """A tool message's answer to: the call's id."""

    def wire(self) -> dict[str, Any]:
        """The message as OpenAI-compatible servers take it.

        Empty tool fields are left out: chat templates reject a null where they expect text.
        """
        wired: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            wired["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            wired["tool_call_id"] = self.tool_call_id
        return wired

    @field_validator("content")
    @classmethod
    def _storable(cls, value: str) -> str:
        return no_nul(value, "message")


class Sampling(BaseModel):
    """Sampling parameters; None leaves the server's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None


class TokenUsage(BaseModel):
    """Tokens a generation consumed, as the server counted them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    """Input tokens the server did not recompute (its prefix cache); part of `input_tokens`."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
        )


class JSONSchemaFormat(BaseModel):
    """Constrain the answer to JSON that validates against `json_schema`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any]


def _object_schema(spec: ToolSpec) -> None:
    """ValueError unless an agent tool's parameters are an object's JSON schema.

    Its properties and definitions must be schemas: the kernel describes them to the model.
    """
    parameters = spec.parameters
    for part in ("properties", "$defs"):
        found = parameters.get(part, {})
        if not (isinstance(found, dict) and all(isinstance(v, dict) for v in found.values())):
            raise ValueError(
                f"agent tool {spec.name!r}: its parameters' {part!r} must map names to schemas"
            )
    if parameters.get("type", "object") != "object":
        raise ValueError(f"agent tool {spec.name!r}: its parameters must be an object's schema")


class LLMRequest(SyscallRequest):
    """`llm.chat`: generate the next assistant message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    """The messages to generate from; with a `conversation`, the new turn to append to it."""
    sampling: Sampling = Sampling()
    response_format: JSONSchemaFormat | None = None
    conversation: str | None = None
    """A conversation of this run (`conversation.open`): the model sees all of it, then
    `messages`; both `messages` and the reply are appended to it."""
    tools: list[ToolName] = Field(default=[], max_length=64)
    """Tools the model may call, by their registered names; the kernel supplies their schemas
    and the reply's `tool_calls` are the calls the model made."""
    tool_choice: Literal["auto", "required"] = "auto"
    """`required`: the model must call at least one of `tools` rather than answer."""
    tool_specs: list[ToolSpec] = []
    """Set by the kernel from its registry for a server that calls tools natively; whatever a
    workflow sends here is replaced."""
    agent_tools: list[ToolSpec] = Field(default=[], max_length=64)
    """Tools the agent's own code answers (a framework's handoffs, its functions that compute
    in the run): offered to the model beside the kernel's `tools`, their calls come back in the
    reply like any other. The kernel runs none of them; they are what the model is told."""

    @model_validator(mode="after")
    def _tools_or_format(self) -> Self:
        if (self.tools or self.agent_tools) and self.response_format is not None:
            raise ValueError("tools and response_format cannot be combined in one request")
        names = [*self.tools, *(spec.name for spec in self.agent_tools)]
        if len(set(names)) != len(names):
            raise ValueError(f"tools are named more than once: {names}")
        if self.agent_tools:
            told = json.dumps([spec.model_dump() for spec in self.agent_tools])
            if "\\u0000" in told:
                raise ValueError("agent tools hold a NUL character, which the kernel cannot store")
            if len(told) > MAX_AGENT_TOOLS_CHARS:
                raise ValueError(
                    f"agent tools are {len(told)} characters of JSON; at most "
                    f"{MAX_AGENT_TOOLS_CHARS}"
                )
        for spec in self.agent_tools:
            if not TOOL_NAME.match(spec.name):
                raise ValueError(
                    f"agent tool {spec.name[:80]!r} is not a tool name: 1-64 letters, digits, "
                    "'_' or '-', starting with a letter"
                )
            _object_schema(spec)
        return self

    def resource(self) -> str:
        """The model, as `llm:<model>`."""
        return f"llm:{self.model}"


class LLMResponse(SyscallResponse):
    """The result of `llm.chat`."""

    text: str
    model: str
    usage: TokenUsage
    finish_reason: str | None = None
    resumed_from: int = 0
    """Output tokens carried over from an interrupted attempt (0: generated in one go)."""
    continuation: str | None = None
    """Set when the generation stopped at the end of its time slice (finish reason `slice`):
    the suspended generation to continue with `llm.continue`; `text` is then this slice's."""
    instance: str | None = None
    """The LLM instance that generated it (cache affinity sends the run's next call there)."""
    context_tokens: int | None = None
    """In a conversation: its tokens in the model's context, the reply included."""
    compact_at: int | None = None
    """In a conversation: past this many tokens the kernel's rule is to compact it."""
    tool_calls: list[ToolCall] = []
    """The tools the model called (for a request with `tools`); `text` is then empty."""


class ConversationOpen(SyscallRequest):
    """`conversation.open`: start a conversation kept by the kernel."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    system: str | None = None

    def resource(self) -> str:
        """A new conversation."""
        return "conversation:new"


class ConversationRef(SyscallResponse):
    """A conversation, as agent state holds it: by reference, never by content."""

    model_config = ConfigDict(frozen=True)

    id: str
    model: str


class CompactRequest(SyscallRequest):
    """`llm.compact`: summarise a conversation's oldest turns and put the summary in their place."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversation: str
    model: str

    def resource(self) -> str:
        """The model that writes the summary."""
        return f"llm:{self.model}"


class Compaction(SyscallResponse):
    """What `llm.compact` did."""

    summarized: int
    """Messages replaced by the summary (0: nothing old enough to compact)."""
    tokens_before: int
    tokens_after: int
    usage: TokenUsage = TokenUsage()


class LLMContinuation(SyscallRequest):
    """`llm.continue`: resume a generation suspended at the end of its time slice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    generation: str = Field(min_length=1, max_length=512)

    def resource(self) -> str:
        """The model, as `llm:<model>`: continuing is generating."""
        return f"llm:{self.model}"
