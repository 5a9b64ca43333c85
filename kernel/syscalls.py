"""The kernel's ABI: every syscall's request and response, and a run's specification."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kernos.kernel.paths import check_path, check_prefix

#: Names of tenants, users and agents: they appear in paths, policies and search attributes.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]
"""A tool's name: what models call it by (OpenAI's function-name rule, starting with a letter)."""
MAX_TOOL_ARGUMENTS = 64 * 1024
"""Characters of a tool call's arguments that any request may carry; `[tools]
max_argument_bytes` is the kernel's limit below it."""

Priority = Annotated[int, Field(ge=1, le=5)]
"""Temporal's priority key: 1 runs first, 5 last, 3 is the default."""

Policy = Literal["fifo", "rr", "priority", "fair"]
"""How a run's LLM syscalls are ordered in their model's queue (kernel.scheduler)."""


def check_name(kind: str, value: str) -> str:
    """Return `value` if it is a safe name, else raise ValueError naming the rule."""
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{kind} {value!r} is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_user(value: str) -> str:
    """Return `value` if it names a user: `name`, or `tenant/name` for a user of another tenant."""
    home, separator, name = value.partition("/")
    for part in (home, name) if separator else (value,):
        if not NAME_PATTERN.match(part):
            raise ValueError(
                f"user {value!r} is not a valid name: a user is 1-64 letters, digits, '.', '_' or "
                "'-', starting with a letter or digit, and '<tenant>/<user>' for a user of "
                "another tenant"
            )
    return value


def _no_nul(text: str, what: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL: refuse it by name rather than fail in the store.
    if "\x00" in text:
        raise ValueError(f"the {what} contains a NUL character, which the kernel cannot store")
    return text


class RunSpec(BaseModel):
    """What a client asks the kernel to run: an agent, its task, and on whose behalf."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    task: str
    tenant: str = "default"
    user: str = "operator"
    priority: Priority = 3
    model: str | None = None
    """The LLM model the agent's calls use unless they name another; the kernel fills it in."""
    policy: Policy | None = None
    """The scheduling policy of this run; the kernel's default if unset."""

    @field_validator("agent", "tenant")
    @classmethod
    def _safe_name(cls, value: str, info: ValidationInfo) -> str:
        return check_name(info.field_name or "name", value)

    @field_validator("user")
    @classmethod
    def _safe_user(cls, value: str) -> str:
        return check_user(value)

    @model_validator(mode="after")
    def _own_users_plainly(self) -> Self:
        home, qualified, name = self.user.partition("/")
        if qualified and home == self.tenant:
            raise ValueError(
                f"user {self.user!r} is of tenant {self.tenant!r} itself: name it {name!r} "
                "('<tenant>/<user>' is for a user of another tenant)"
            )
        return self

    @field_validator("task")
    @classmethod
    def _non_empty_task(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("task is empty: give the agent something to do")
        return _no_nul(value, "task")


class SyscallLimits(BaseModel):
    """What a run may ask of the kernel and of Temporal; fixed at admission.

    Its syscalls' timeouts and retries (in seconds), and how much it may hold at once.

    The SDK keeps an honest run inside the bounds (a syscall past `max_pending_syscalls` waits
    its turn, a request over `max_payload_bytes` raises PayloadTooLarge in agent code); a
    pool's host enforces them on whatever the run's code sends, and fails a run that goes past
    one (`RunLimitExceeded`), before Temporal's own limits would end it unnamed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    llm_start_to_close_s: float = Field(default=600.0, gt=0)
    llm_heartbeat_s: float = Field(default=30.0, gt=0)
    kernel_start_to_close_s: float = Field(default=30.0, gt=0)
    tool_start_to_close_s: float = Field(default=300.0, gt=0)
    """The outer bound on a tool call's attempt; each tool's own `timeout_s` is enforced inside."""
    approval_timeout_s: float = Field(default=86_400.0, gt=0)
    """How long a syscall waits for a human's approval before it is denied."""
    retry_initial_interval_s: float = Field(default=1.0, gt=0)
    retry_max_interval_s: float = Field(default=30.0, gt=0)
    continue_as_new_events: int = Field(default=10_000, ge=20)
    """A step agent's run continues as new past this many history events, or sooner when
    Temporal suggests it (Temporal's own limits are 51,200 events and 50 MiB)."""
    max_pending_syscalls: int = Field(default=256, ge=1, le=2000)
    """Syscalls a run may have in flight at once (Temporal allows 2,000 pending activities)."""
    max_pending_timers: int = Field(default=256, ge=1, le=10_000)
    """Timers a run may have running at once: sleeps, and waits with a timeout."""
    max_history_events: int = Field(default=40_000, ge=100, le=51_200)
    """Events a run's history may hold: past it the run fails, named, where Temporal would
    terminate it at 51,200 with no outcome recorded."""
    max_history_bytes: int = Field(default=40 * 2**20, ge=2**20, le=50 * 2**20)
    """Bytes a run's history may hold (Temporal terminates a run at 50 MiB)."""
    max_payload_bytes: int = Field(default=7 * 2**18, ge=64 * 2**10, le=2 * 2**20 - 64 * 2**10)
    """Largest payload (its data, in bytes) a run may send: a syscall's request, its result,
    the state it carries on. Temporal refuses a payload over 2 MiB; the default is 1.75 MiB."""

    @model_validator(mode="after")
    def _continues_before_the_limit(self) -> Self:
        if self.continue_as_new_events >= self.max_history_events:
            raise ValueError(
                f"continue_as_new_events ({self.continue_as_new_events}) must be below "
                f"max_history_events ({self.max_history_events}): a step agent's run would "
                "fail before it continued as new"
            )
        return self


class Scheduling(BaseModel):
    """How the scheduler dispatches a run's syscalls; fixed at admission."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: Policy = "priority"
    fairness_weight: float = Field(default=1.0, gt=0)
    """The run's tenant's share under `fair`, relative to other tenants' weights."""
    affinity_s: float = Field(default=0.0, ge=0)
    """How long an LLM syscall waits for the instance that served the run last (0: no
    affinity, every syscall goes to the model's pool)."""


class Carried(BaseModel):
    """What a step agent's run carries into its next execution when it continues as new."""

    model_config = ConfigDict(frozen=True)

    state: dict[str, Any]
    steps: int
    syscalls: int
    usage: TokenUsage
    held_turns: list[Annotated[float, Field(allow_inf_nan=False, ge=0, lt=1e11)]] = Field(
        default=[], max_length=2000
    )
    """When each syscall the last execution left pending has surely ended (workflow time, in
    seconds): the next execution keeps a turn for each till then, as the pool's host counts
    them. Never more than the most pending syscalls a run may have."""


class RunInput(BaseModel):
    """The input of the `AgentRun` workflow, written by the kernel at admission."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    spec: RunSpec
    limits: SyscallLimits = SyscallLimits()
    kernel_task_queue: str = "kernos.kernel"
    llm_queue_prefix: str = "llm."
    tool_queue_prefix: str = "tools."
    tools: list[str] = []
    """The tools registered when the run was admitted: a call to any other fails at once."""
    mcp_servers: list[str] = []
    """MCP servers registered then: their tools (`<server>__<tool>`) go to the server's queue."""
    scheduling: Scheduling = Scheduling()
    pool: str | None = None
    """The pool whose confined process runs the agent's code (its tenant unless an operator
    split the tenant's agents); unset in runs admitted before pools, which ran as the tenant."""
    carried: Carried | None = None
    """Set by the run itself when it continues as new; never by a client."""
    reports_end: bool = True
    """Whether the run sends `run.finish` as it ends: only runs admitted before the kernel
    learned every end from Temporal (`kernel/run_ends.py`) do. Fixed in the input, not by
    `workflow.patched`, whose marker would cost each run a search-attribute update."""


class RunResult(BaseModel):
    """What a finished run returns."""

    run_id: str
    output: str
    usage: TokenUsage
    syscalls: int


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
        return _no_nul(value, "message")


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


class SyscallRequest(BaseModel):
    """Base of every syscall request: it names the resource it touches.

    Which syscall a request is for, and everything else about it, is in the syscall table
    (`kernos.kernel.syscall_table`).
    """

    def resource(self) -> str:
        """The resource that the access manager decides on, e.g. `llm:gemma`."""
        raise NotImplementedError


class JSONSchemaFormat(BaseModel):
    """Constrain the answer to JSON that validates against `json_schema`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any]


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

    @model_validator(mode="after")
    def _tools_or_format(self) -> Self:
        if self.tools and self.response_format is not None:
            raise ValueError("tools and response_format cannot be combined in one request")
        if len(set(self.tools)) != len(self.tools):
            raise ValueError(f"tools are named more than once: {self.tools}")
        return self

    def resource(self) -> str:
        """The model, as `llm:<model>`."""
        return f"llm:{self.model}"


class SyscallResponse(BaseModel):
    """What a syscall returns: the kernel worker that answered seals it (`result_seal`)."""

    seal: str | None = Field(default=None, repr=False)
    """The kernel worker's seal, checked (and cleared) before the agent sees the response."""


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


MetadataValue = str | int | float | bool
"""Memory metadata values: flat JSON scalars, so filters are simple containment."""


#: The memory scope of the agent's past conversations (searchable, not writable).
CONVERSATIONS = "conversations"


class MemoryScoped(SyscallRequest):
    """Where a memory syscall looks.

    The calling agent's own memory, a named shared scope (`scope`), or another agent's own
    memory (`agent`, for reading). The access manager decides on `memory:own`,
    `memory:shared/<scope>` or `memory:agent/<agent>`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: str | None = None
    agent: str | None = None

    @field_validator("scope", "agent")
    @classmethod
    def _safe(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_name(f"memory {info.field_name}", value)

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if self.scope is not None and self.agent is not None:
            raise ValueError("name a shared scope or another agent's memory, not both")
        return self

    def resource(self) -> str:
        """What the access manager decides on: the scope as a resource.

        `memory:own`, `memory:shared/<scope>`, `memory:agent/<agent>`, or
        `memory:conversations` (the agent's past conversations).
        """
        if self.scope == CONVERSATIONS:
            return "memory:conversations"
        if self.scope is not None:
            return f"memory:shared/{self.scope}"
        if self.agent is not None:
            return f"memory:agent/{self.agent}"
        return "memory:own"


class MemoryWrite(MemoryScoped):
    """A memory syscall that changes items: in the agent's own memory or a shared scope."""

    @field_validator("scope")
    @classmethod
    def _not_conversations(cls, value: str | None) -> str | None:
        if value == CONVERSATIONS:
            raise ValueError(
                "past conversations are written by conversation syscalls and only searched here"
            )
        return value

    @field_validator("agent")
    @classmethod
    def _own_or_shared(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError(
                f"an agent cannot write agent {value!r}'s memory: write its own, or a shared scope"
            )
        return None


def _check_metadata(metadata: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
    for key, value in metadata.items():
        if not 1 <= len(key) <= 64:
            raise ValueError(f"metadata key {key[:80]!r} must be 1-64 characters")
        _no_nul(key, "metadata key")
        if isinstance(value, str):
            _no_nul(value, f"metadata value of {key!r}")
    if len(metadata) > 32:
        raise ValueError(f"metadata has {len(metadata)} keys; at most 32")
    return metadata


class MemoryAdd(MemoryWrite):
    """`memory.add`: remember `content`, with metadata to filter on."""

    content: str = Field(min_length=1)
    metadata: dict[str, MetadataValue] = {}

    _metadata = field_validator("metadata")(_check_metadata)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        return _no_nul(value, "content")


class MemorySearch(MemoryScoped):
    """`memory.search`: the `k` items nearest in meaning to `query`."""

    query: str = Field(min_length=1)
    k: int = Field(default=5, ge=1)
    filter: dict[str, MetadataValue] = {}
    """Only items whose metadata contains all of these pairs."""
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Only items at least this similar (cosine similarity, 1 is identical)."""

    _filter = field_validator("filter")(_check_metadata)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _no_nul(value, "query")


class MemoryGet(MemoryScoped):
    """`memory.get`: one item by id."""

    id: str = Field(min_length=1, max_length=64)


class MemoryUpdate(MemoryWrite):
    """`memory.update`: replace an item's content (re-embedded) or metadata."""

    id: str = Field(min_length=1, max_length=64)
    content: str | None = Field(default=None, min_length=1)
    metadata: dict[str, MetadataValue] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value, "content")

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, MetadataValue] | None) -> dict[str, MetadataValue] | None:
        return None if value is None else _check_metadata(value)


class MemoryDelete(MemoryWrite):
    """`memory.delete`: forget an item."""

    id: str = Field(min_length=1, max_length=64)


class MemoryList(MemoryScoped):
    """`memory.list`: items newest first, a page at a time."""

    filter: dict[str, MetadataValue] = {}
    limit: int = Field(default=50, ge=1, le=1000)
    before: str | None = Field(default=None, max_length=64)
    """The id of the last item of the previous page."""

    _filter = field_validator("filter")(_check_metadata)


class MemoryItem(SyscallResponse):
    """An item as memory syscalls return it."""

    id: str
    scope: str
    """`agent/<name>` or `shared/<name>`."""
    owner: str
    """The agent that wrote it."""
    content: str
    metadata: dict[str, MetadataValue]
    created_at: datetime
    updated_at: datetime
    score: float | None = None
    """In search results: cosine similarity to the query."""


class MemoryAdded(MemoryItem):
    """What `memory.add` made, and the agent's least recently used items it evicted."""

    evicted: list[str] = []


class MemoryItems(SyscallResponse):
    """Items of `memory.search` (best first) or `memory.list` (newest first)."""

    items: list[MemoryItem]


class MemoryDeleted(SyscallResponse):
    """What `memory.delete` did (a retried delete finds nothing left and says so)."""

    id: str
    deleted: bool


class StorageRequest(SyscallRequest):
    """A storage syscall: a file of the calling agent's namespace, as `storage:<path>`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str

    @field_validator("path")
    @classmethod
    def _confined(cls, value: str) -> str:
        return check_path(value)

    def resource(self) -> str:
        """The file, as `storage:<path>`."""
        return f"storage:{self.path}"


Encoding = Literal["utf-8", "base64"]
"""How file content travels: text, or bytes in base64."""


class StorageWrite(StorageRequest):
    """`storage.write`: a new version of the file."""

    content: str
    encoding: Encoding = "utf-8"
    expected_version: int | None = Field(default=None, ge=0)
    """Write only if the file is at this version (0: it must not exist yet); else
    VersionConflict."""


class StorageRead(StorageRequest):
    """`storage.read`: the file's content, at its latest version or at `version`."""

    version: int | None = Field(default=None, ge=1)
    encoding: Encoding = "utf-8"


class StorageVersions(StorageRequest):
    """`storage.versions`: the file's versions, oldest first."""


class StorageRollback(StorageRequest):
    """`storage.rollback`: a new version with the content of `version` (a deleted file too)."""

    version: int = Field(ge=1)


class StorageDelete(StorageRequest):
    """`storage.delete`: mark the file deleted; a rollback recovers it until it is purged."""


class StorageList(SyscallRequest):
    """`storage.list`: the namespace's files under `prefix`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = ""
    include_deleted: bool = False
    limit: int = Field(default=100, ge=1, le=1000)

    @field_validator("prefix")
    @classmethod
    def _confined(cls, value: str) -> str:
        return check_prefix(value)

    def resource(self) -> str:
        """The listed part of the namespace, as `storage:<prefix>*`."""
        return f"storage:{self.prefix}*"


class StorageSearch(SyscallRequest):
    """`storage.search`: the namespace's files whose content is nearest in meaning to `query`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    query: str = Field(min_length=1, max_length=16 * 1024)
    k: int = Field(default=5, ge=1, le=100)
    prefix: str = ""

    @field_validator("prefix")
    @classmethod
    def _confined(cls, value: str) -> str:
        return check_prefix(value)

    def resource(self) -> str:
        """The searched part of the namespace, as `storage:<prefix>*`."""
        return f"storage:{self.prefix}*"


class FileHit(BaseModel):
    """A file that `storage.search` found: its latest version, how near, how it begins."""

    path: str
    version: int
    score: float
    snippet: str


class FileHits(SyscallResponse):
    """Files of `storage.search`, best first."""

    files: list[FileHit]


class FileVersion(SyscallResponse):
    """One version of a file."""

    path: str
    version: int
    size: int
    sha256: str
    action: Literal["write", "rollback"]
    created_at: datetime


class FileContent(SyscallResponse):
    """What `storage.read` returns."""

    path: str
    version: int
    size: int
    sha256: str
    content: str
    encoding: Encoding


class FileInfo(BaseModel):
    """A file as `storage.list` shows it."""

    path: str
    version: int
    size: int
    updated_at: datetime
    deleted: bool


class FileList(SyscallResponse):
    """Files of `storage.list`, by path."""

    files: list[FileInfo]


class FileVersions(SyscallResponse):
    """Versions of `storage.versions`, oldest first."""

    versions: list[FileVersion]


class FileDeleted(SyscallResponse):
    """What `storage.delete` did (False: already deleted)."""

    path: str
    deleted: bool


class ToolCallRequest(SyscallRequest):
    """`tool.call`: run one registered tool with the model's (or the agent's) arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ToolName
    arguments: str = Field(default="{}", max_length=MAX_TOOL_ARGUMENTS)
    """A JSON object, as text: validated against the tool's parameters by the kernel."""
    call_id: str = Field(default="", max_length=128)

    @field_validator("arguments")
    @classmethod
    def _storable(cls, value: str) -> str:
        return _no_nul(value, "tool call's arguments")

    def resource(self) -> str:
        """The tool, as `tool:<name>`."""
        return f"tool:{self.name}"


class ToolResult(SyscallResponse):
    """What a tool call came to: its output, or an error the model can read and act on.

    Bad arguments, a tool's own exception, a timeout or an oversized result are results, not
    failures of the run: the model sees them as the tool's answer.
    """

    call_id: str
    name: str
    ok: bool
    content: str
    """The tool's output as text (JSON for anything but a string), or the error's message."""
    error_type: str | None = None
    replayed: bool = False
    """True when the kernel answered from its record of an earlier attempt of this call."""

    def message(self) -> Message:
        """The tool message that gives this result back to the model."""
        content = self.content if self.ok else f"error ({self.error_type}): {self.content}"
        content = content.replace("\x00", "\ufffd")  # a message is stored; NUL cannot be
        return Message(role="tool", content=content, tool_call_id=self.call_id or None)


class ApprovalNotice(BaseModel):
    """The update that wakes a run after a decision on one of its approvals."""

    approval_id: str
    status: Literal["approved", "denied"]


class RunOutcome(BaseModel):
    """`run.finish`: how a run ended, recorded by the kernel."""

    status: Literal["completed", "failed", "cancelled"]
    output: str | None = None
    error: str | None = None
    usage: TokenUsage = TokenUsage()
    """What the workflow counted; shown in its history, not trusted (the kernel counts)."""
    syscalls: int = 0


RunResult.model_rebuild()
Carried.model_rebuild()
RunInput.model_rebuild()
