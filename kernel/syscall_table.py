"""The syscall table: every syscall declared once, and the kernel's actions that audit rows name.

Each entry says what the syscall is: its request and response types, the resource the access
manager decides on and where that comes from, the queue it waits on, its timeouts and retry
policy (from the run's limits, fixed at admission), and what it does to the world. The
workflow's dispatcher, the kernel's interceptor and the workers' registration all read it, so
what a workflow claims about a syscall can be checked against one declaration. No other module
spells a syscall's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel
from temporalio.common import RetryPolicy

from kernos.kernel.syscalls import (
    ApprovalAsk,
    ApprovalGiven,
    Compaction,
    CompactRequest,
    ConversationOpen,
    ConversationRef,
    FileContent,
    FileDeleted,
    FileHits,
    FileList,
    FileVersion,
    FileVersions,
    LLMContinuation,
    LLMRequest,
    LLMResponse,
    MemoryAdd,
    MemoryAdded,
    MemoryDelete,
    MemoryDeleted,
    MemoryGet,
    MemoryItem,
    MemoryItems,
    MemoryList,
    MemorySearch,
    MemoryUpdate,
    RunOutcome,
    StorageDelete,
    StorageList,
    StorageRead,
    StorageRollback,
    StorageSearch,
    StorageVersions,
    StorageWrite,
    SyscallLimits,
    SyscallRequest,
    ToolCallRequest,
    ToolResult,
)

AGENT_RUN = "AgentRun"
"""The workflow type of every agent run; only its activities are syscalls."""

Request = TypeVar("Request", bound=BaseModel)
Response = TypeVar("Response", bound=BaseModel | None)

Queue = Literal["kernel", "llm", "tool"]
"""Who serves it: the kernel queue's worker, an LLM instance's worker, or a tool's worker."""
Effect = Literal["read", "write", "generate", "external", "lifecycle"]
"""What it does: reads the kernel's state, changes it, spends a model's tokens, acts outside
the kernel (a tool), or records the run's own life."""
ResourceSource = Literal["request", "served"]
"""Where the decided resource comes from: the request's fields (a path, a scope), or what
serves the syscall (an LLM instance's own model, a tool worker's own tool), which the request
must then name."""


@dataclass(frozen=True)
class Syscall(Generic[Request, Response]):
    """One syscall, as the kernel knows it."""

    name: str
    request: type[Request]
    response: type[Response]
    queue: Queue
    resource: str
    """The resource's pattern, as policies name it (e.g. `llm:<model>`)."""
    effect: Effect
    resource_source: ResourceSource = "request"
    metered: bool = False
    """It spends tokens: refused once the tenant's budget is used (or waits, by an `a` rule)."""
    policy_checked: bool = True
    """Decided by the access manager and audited, and so open to `a` rules (a human's
    approval); the run's own bookkeeping is only identity-checked."""
    asks_human: bool = False
    """Once the `p` rules allow it, it always waits for a human's approval, `a` rule or not:
    the agent asks for one."""

    def start_to_close(self, limits: SyscallLimits) -> timedelta:
        """How long one attempt may run."""
        seconds = {
            "llm": limits.llm_start_to_close_s,
            "tool": limits.tool_start_to_close_s,
            "kernel": limits.kernel_start_to_close_s,
        }[self.queue]
        return timedelta(seconds=seconds)

    def heartbeat(self, limits: SyscallLimits) -> timedelta | None:
        """How long an attempt may go silent: only generations heartbeat."""
        return timedelta(seconds=limits.llm_heartbeat_s) if self.queue == "llm" else None


def retry_policy(limits: SyscallLimits) -> RetryPolicy:
    """The retry policy of every syscall of a run: Temporal's one retry loop, unbounded."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=limits.retry_initial_interval_s),
        maximum_interval=timedelta(seconds=limits.retry_max_interval_s),
        backoff_coefficient=2.0,
        maximum_attempts=0,
    )


LLM_CHAT = Syscall(
    "llm.chat", LLMRequest, LLMResponse, "llm", "llm:<model>", "generate",
    resource_source="served", metered=True,
)  # fmt: skip
LLM_CONTINUE = Syscall(
    "llm.continue", LLMContinuation, LLMResponse, "llm", "llm:<model>", "generate",
    resource_source="served", metered=True,
)  # fmt: skip
LLM_COMPACT = Syscall(
    "llm.compact", CompactRequest, Compaction, "llm", "llm:<model>", "generate",
    resource_source="served", metered=True,
)  # fmt: skip
CONVERSATION_OPEN = Syscall(
    "conversation.open", ConversationOpen, ConversationRef, "kernel", "conversation:new", "write"
)
MEMORY_ADD = Syscall("memory.add", MemoryAdd, MemoryAdded, "kernel", "memory:<scope>", "write")
MEMORY_SEARCH = Syscall(
    "memory.search", MemorySearch, MemoryItems, "kernel", "memory:<scope>", "read"
)
MEMORY_GET = Syscall("memory.get", MemoryGet, MemoryItem, "kernel", "memory:<scope>", "read")
MEMORY_UPDATE = Syscall(
    "memory.update", MemoryUpdate, MemoryItem, "kernel", "memory:<scope>", "write"
)
MEMORY_DELETE = Syscall(
    "memory.delete", MemoryDelete, MemoryDeleted, "kernel", "memory:<scope>", "write"
)
MEMORY_LIST = Syscall("memory.list", MemoryList, MemoryItems, "kernel", "memory:<scope>", "read")
STORAGE_WRITE = Syscall(
    "storage.write", StorageWrite, FileVersion, "kernel", "storage:<path>", "write"
)
STORAGE_READ = Syscall("storage.read", StorageRead, FileContent, "kernel", "storage:<path>", "read")
STORAGE_VERSIONS = Syscall(
    "storage.versions", StorageVersions, FileVersions, "kernel", "storage:<path>", "read"
)
STORAGE_ROLLBACK = Syscall(
    "storage.rollback", StorageRollback, FileVersion, "kernel", "storage:<path>", "write"
)
STORAGE_DELETE = Syscall(
    "storage.delete", StorageDelete, FileDeleted, "kernel", "storage:<path>", "write"
)
STORAGE_LIST = Syscall("storage.list", StorageList, FileList, "kernel", "storage:<prefix>*", "read")
STORAGE_SEARCH = Syscall(
    "storage.search", StorageSearch, FileHits, "kernel", "storage:<prefix>*", "read"
)
TOOL_CALL = Syscall(
    "tool.call", ToolCallRequest, ToolResult, "tool", "tool:<name>", "external",
    resource_source="served",
)  # fmt: skip
#: The agent's own tool asks a human first; the kernel records the decision and runs nothing.
APPROVAL_ASK = Syscall(
    "approval.ask", ApprovalAsk, ApprovalGiven, "kernel", "agent-tool:<name>", "lifecycle",
    asks_human=True,
)  # fmt: skip
#: Sent only by runs begun before the kernel learned ends from Temporal (kernel/run_ends.py).
RUN_FINISH = Syscall(
    "run.finish", RunOutcome, type(None), "kernel", "run:<own>", "lifecycle", policy_checked=False
)

SYSCALLS: dict[str, Syscall[Any, Any]] = {
    syscall.name: syscall
    for syscall in (
        LLM_CHAT, LLM_CONTINUE, LLM_COMPACT, CONVERSATION_OPEN,
        MEMORY_ADD, MEMORY_SEARCH, MEMORY_GET, MEMORY_UPDATE, MEMORY_DELETE, MEMORY_LIST,
        STORAGE_WRITE, STORAGE_READ, STORAGE_VERSIONS, STORAGE_ROLLBACK, STORAGE_DELETE,
        STORAGE_LIST, STORAGE_SEARCH, TOOL_CALL, APPROVAL_ASK, RUN_FINISH,
    )
}  # fmt: skip
"""Every syscall by name."""
_BY_REQUEST = {syscall.request: syscall for syscall in SYSCALLS.values()}


def syscall_of(request: type[SyscallRequest] | SyscallRequest) -> Syscall[Any, Any]:
    """The syscall a request type (or request) is for."""
    kind = request if isinstance(request, type) else type(request)
    found = _BY_REQUEST.get(kind)
    if found is None:
        raise LookupError(f"{kind.__name__} is not the request of any syscall")
    return found


def on_queue(queue: Queue) -> list[str]:
    """The syscalls a queue's workers serve, by name."""
    return sorted(name for name, syscall in SYSCALLS.items() if syscall.queue == queue)


@dataclass(frozen=True)
class Action:
    """Something the kernel does for an operator or a client, outside any run's syscalls.

    Audit rows name it as they name syscalls; a policy rule may govern it.
    """

    name: str
    resource: str


RUN_SUBMIT = Action("run.submit", "tenant:<tenant> or priority:<1-5>")
RUN_CANCEL = Action("run.cancel", "run:<run id>")
APPROVAL_DECIDE = Action("approval.decide", "the waiting syscall's resource")
POLICY_EDIT = Action("policy.edit", "policy:<tenant>")
BUDGET_SET = Action("budget.set", "budget:<tenant>")
STORAGE_PURGE = Action("storage.purge", "storage:<path>")
MEMORY_ERASE = Action(MEMORY_DELETE.name, "memory:<scope>")
"""An operator's deletion of a memory item: audited as the syscall of the same name."""
KEY_CREATE = Action("keys.create", "key:<id>")
KEY_REVOKE = Action("keys.revoke", "key:<id>")
RUN_END = Action("run.end", "run:<run id>")
"""A run ended, as Temporal has it: recorded by the client that waited for it or by kernel
workers, whatever the run said."""

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        RUN_SUBMIT, RUN_CANCEL, APPROVAL_DECIDE, POLICY_EDIT, BUDGET_SET, STORAGE_PURGE,
        MEMORY_ERASE, KEY_CREATE, KEY_REVOKE, RUN_END,
    )
}  # fmt: skip
"""Every kernel action by name (an operator's memory deletion shares the syscall's name)."""
