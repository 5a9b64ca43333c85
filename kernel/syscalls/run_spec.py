"""A run's types: what a client asks for, what the kernel fixes at admission, how it ends."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kernos.kernel.syscalls.common import check_name, check_user, no_nul
from kernos.kernel.syscalls.llm_calls import TokenUsage

Priority = Annotated[int, Field(ge=1, le=5)]
"""Temporal's priority key: 1 runs first, 5 last, 3 is the default."""

Policy = Literal["fifo", "rr", "priority", "fair"]
"""How a run's LLM syscalls are ordered in their model's queue (kernel.scheduler)."""


#: A session name: printable ASCII without spaces, as a header can carry it.
SESSION_PATTERN = r"^[!-~]{1,128}$"


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
    session: str | None = Field(default=None, pattern=SESSION_PATTERN)
    """A client's name for a series of its runs (the turns of one chat; the gateway's
    `X-Kernos-Session`). With cache affinity on, a run's first LLM call waits for the instance
    that served the series last, whose cache holds the chat so far. Grouping only: it grants
    nothing, and one user's session is no other user's."""

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
        return no_nul(value, "task")


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
    instances: dict[str, str] = {}
    """The instance that served the run's session last, by model, where its first call to
    that model waits (cache affinity); read from the kernel's records at admission."""
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
