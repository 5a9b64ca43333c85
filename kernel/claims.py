"""What a workflow claims about a syscall, checked against the syscall table and the run's record.

Agent code schedules its syscalls itself (it runs in the workflow), so everything Temporal says
about an activity was chosen by the agent: the queue, the priority and fairness, the timeouts,
the retry policy, and the request's own fields. None of it is believed. The kernel knows what
each should be, from the syscall table and from what it fixed when it admitted the run, and
refuses a syscall whose claims differ, naming the first false one.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.common import Priority, RetryPolicy

from kernos.kernel.run_store import RunRecord
from kernos.kernel.scheduler import priority_of
from kernos.kernel.syscall_table import AGENT_RUN, Queue, Syscall, retry_policy
from kernos.kernel.syscalls import SyscallRequest

#: How much later than its schedule-to-start limit an attempt may start (clocks and delivery).
_CLOCK_SLACK_S = 1.0


class RecentRuns:
    """The runs and sessions an LLM instance served lately: only theirs wait on its queue.

    Kept in memory (a bounded LRU): after a restart an honest run's call on the instance's
    queue is turned away as `AffinityLost`, and its dispatcher sends it to the model's pool.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._served: OrderedDict[tuple[str, ...], None] = OrderedDict()

    def note(self, record: RunRecord) -> bool:
        """The instance has served a call of the run; whether it is new to the run's session."""
        keys = _served_keys(record)
        new = len(keys) > 1 and keys[1] not in self._served
        for key in keys:
            self._served[key] = None
            self._served.move_to_end(key)
        while len(self._served) > self._size:
            self._served.popitem(last=False)
        return new

    def __contains__(self, record: object) -> bool:
        """Whether the instance served the run, or its session, lately."""
        if not isinstance(record, RunRecord):
            return False
        return any(key in self._served for key in _served_keys(record))


def _served_keys(record: RunRecord) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = [("run", record.run_id)]
    if record.spec.session is not None:
        keys.append(("session", record.tenant, record.user, record.agent, record.spec.session))
    return keys


@dataclass(frozen=True)
class Served:
    """What a kernel worker serves: its queues and, for an LLM or a tool worker, what it runs.

    A syscall's resource comes from here where the table says so: an LLM instance serves only
    its own model, a tool's worker only its own tools.
    """

    kind: Queue
    queues: frozenset[str]
    model: str | None = None
    tools: frozenset[str] = field(default_factory=frozenset)
    mcp_server: str | None = None
    """An MCP server's worker serves whatever `<server>__<tool>` it offers; an unknown one it
    names itself (the run, knowing only the server, routes every such name here)."""
    affinity_queue: str | None = None
    """An LLM instance's own queue (cache affinity), where only runs it served may wait."""
    instance: str | None = None
    """The LLM instance's name."""
    recent: RecentRuns = field(default_factory=RecentRuns)

    def serves_tool(self, name: object) -> bool:
        """Whether a tool call naming `name` belongs on this worker's queue."""
        if not isinstance(name, str):
            return False
        return name in self.tools or (
            self.mcp_server is not None and name.startswith(f"{self.mcp_server}__")
        )

    def resource(self, syscall: Syscall[Any, Any], request: object) -> str:
        """The resource the access manager decides on (after `false_claim` found none)."""
        if syscall.resource_source == "served" and self.kind == "llm":
            return f"llm:{self.model}"
        return request.resource() if isinstance(request, SyscallRequest) else syscall.name


@dataclass(frozen=True)
class Claims:
    """What Temporal recorded when the workflow scheduled the activity."""

    workflow_type: str | None
    task_queue: str
    priority: Priority
    start_to_close: timedelta | None
    heartbeat: timedelta | None
    schedule_to_close: timedelta | None
    retry_policy: RetryPolicy | None
    waited: timedelta
    """From when this attempt was scheduled to when it started: its time in the queue."""

    @classmethod
    def honest(cls, syscall: Syscall[Any, Any], record: RunRecord, task_queue: str) -> Claims:
        """What an honest dispatch of `syscall` for the run claims (it waited no time)."""
        return cls(
            workflow_type=AGENT_RUN,
            task_queue=task_queue,
            priority=priority_of(record.spec, record.scheduling),
            start_to_close=syscall.start_to_close(record.limits),
            heartbeat=syscall.heartbeat(record.limits),
            schedule_to_close=None,
            retry_policy=retry_policy(record.limits),
            waited=timedelta(0),
        )


def false_claim(
    syscall: Syscall[Any, Any],
    claims: Claims,
    request: object,
    record: RunRecord,
    served: Served,
) -> str | None:
    """The first thing the workflow claimed that the table or the run's record contradicts."""
    name = syscall.name
    if claims.workflow_type != AGENT_RUN:
        return f"{name} came from a {claims.workflow_type!r} workflow, not an agent run"
    if syscall.queue != served.kind or claims.task_queue not in served.queues:
        return f"{name} was scheduled on queue {claims.task_queue!r}, which does not serve it"
    if served.kind == "llm":
        model = getattr(request, "model", None)
        if model != served.model:
            return (
                f"{name} names model {model!r} but was scheduled on queue {claims.task_queue!r}, "
                f"whose instances serve {served.model!r}"
            )
    if served.kind == "tool":
        tool = getattr(request, "name", None)
        if not served.serves_tool(tool):
            return (
                f"{name} names tool {tool!r} but was scheduled on queue {claims.task_queue!r}, "
                f"which serves {sorted(served.tools)}"
            )
    if claims.task_queue == served.affinity_queue:
        affinity = record.scheduling.affinity_s
        if not affinity:
            return (
                f"{name} was scheduled on instance queue {claims.task_queue!r}, but run "
                f"{record.run_id} was admitted without cache affinity"
            )
        if claims.waited.total_seconds() > affinity + _CLOCK_SLACK_S:
            return (
                f"{name} waited {claims.waited.total_seconds():.1f} s on instance queue "
                f"{claims.task_queue!r}; run {record.run_id} waits at most {affinity:g} s there"
            )
    expected = priority_of(record.spec, record.scheduling)
    if _normal(claims.priority) != _normal(expected):
        return (
            f"{name} claimed {_shown(claims.priority)}; run {record.run_id} was admitted with "
            f"{_shown(expected)}"
        )
    limits = record.limits
    for what, claimed, allowed in (
        ("start-to-close timeout", claims.start_to_close, syscall.start_to_close(limits)),
        ("heartbeat timeout", claims.heartbeat, syscall.heartbeat(limits)),
    ):
        if (claimed or None) != allowed:
            return (
                f"{name} claimed a {what} of {_seconds(claimed)}; the run's is {_seconds(allowed)}"
            )
    if claims.schedule_to_close:
        shown = _seconds(claims.schedule_to_close)
        return f"{name} claimed a schedule-to-close timeout of {shown}; the run's has none"
    if not _same_retries(claims.retry_policy, retry_policy(limits)):
        return (
            f"{name} claimed retry policy {_retries(claims.retry_policy)}; the run's is "
            f"{_retries(retry_policy(limits))}"
        )
    return None


def lost_affinity(claims: Claims, record: RunRecord, served: Served) -> str | None:
    """Why a call on an instance's own queue is not served there, if it is not.

    The instance has not served the run, or its session, lately: a forged routing, or a
    restart since. Checked after `false_claim`.
    """
    if claims.task_queue != served.affinity_queue or record in served.recent:
        return None
    return (
        f"run {record.run_id} waited on instance queue {claims.task_queue!r}, but the instance "
        "has served neither it nor its session lately: its calls go to the model's pool"
    )


def _normal(priority: Priority) -> tuple[int | None, str | None, float | None]:
    # Zero and empty mean unset on the wire; the weight travels as a 32-bit float.
    weight = priority.fairness_weight or None
    if weight is not None:
        weight = struct.unpack("f", struct.pack("f", weight))[0]
    return (priority.priority_key or None, priority.fairness_key or None, weight)


def _shown(priority: Priority) -> str:
    key, fairness, weight = _normal(priority)
    shown = f"priority key {key or 'default'}"
    if fairness is not None or weight is not None:
        shown += f", fairness key {fairness!r} weight {weight if weight is not None else 1:g}"
    return shown


def _seconds(value: timedelta | None) -> str:
    return "none" if not value else f"{value.total_seconds():g} s"


def _same_retries(claimed: RetryPolicy | None, allowed: RetryPolicy) -> bool:
    if claimed is None:  # a server too old to say what it applied: nothing to vouch for it
        return False
    return (
        claimed.initial_interval == allowed.initial_interval
        and (claimed.maximum_interval or None) == allowed.maximum_interval
        and claimed.backoff_coefficient == allowed.backoff_coefficient
        and claimed.maximum_attempts == allowed.maximum_attempts
        and not claimed.non_retryable_error_types
    )


def _retries(policy: RetryPolicy | None) -> str:
    if policy is None:
        return "unknown"
    return (
        f"(initial {_seconds(policy.initial_interval)}, at most "
        f"{_seconds(policy.maximum_interval)} apart, x{policy.backoff_coefficient:g}, "
        f"{policy.maximum_attempts or 'unlimited'} attempts"
        + (
            f", not retrying {policy.non_retryable_error_types}"
            if policy.non_retryable_error_types
            else ""
        )
        + ")"
    )
