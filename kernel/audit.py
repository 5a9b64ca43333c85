"""The audit log: one append-only row per access decision, keyed by the activity attempt.

Rows are hash-chained per tenant in the database (`audit_append`, migration 0010);
`kernel.audit_chain` verifies the chains and `kernel.audit_anchor` records their heads outside
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from kernos.kernel.access import Decision, Subject
from kernos.kernel.db.pool import Connection, Pool, connection
from kernos.kernel.syscalls import TokenUsage


@dataclass(frozen=True)
class AttemptKey:
    """Which activity attempt asked: Temporal's ids, never the agent's claims."""

    workflow_id: str
    execution_run_id: str
    activity_id: str
    attempt: int


# The decision and the run's liveness, in one statement: a run that finished between the policy
# check and this insert is denied here, and the row says so.
# A metered syscall (one that spends tokens) is also checked against the tenant's budget here;
# in-flight generations are not counted, so a tenant can overshoot by what is in flight.
# Written once: for one decision its fields are parameters, for a group columns of arrays.
_DECISION_TEMPLATE = """
WITH verdict AS (
    SELECT {columns} r.run_id, r.tenant, r.user_name, r.agent,
           CASE
               WHEN r.finished_at IS NOT NULL THEN 'finished'
               WHEN {metered} AND b.max_tokens IS NOT NULL
                    AND coalesce(u.input_tokens + u.output_tokens, 0) >= b.max_tokens
                   THEN 'budget'
           END AS refusal,
           format('run %%L is %%s; it makes no syscalls', r.run_id, r.status) AS finished,
           format('tenant %%L has used %%s tokens of its budget of %%s',
                  r.tenant, coalesce(u.input_tokens + u.output_tokens, 0), b.max_tokens)
               AS over_budget
    FROM {source}
    JOIN runs r ON r.run_id = {run}
    LEFT JOIN tenant_budgets b ON b.tenant = r.tenant
    LEFT JOIN tenant_usage u ON u.tenant = r.tenant
)
SELECT {index} entry.decision, entry.rule, entry.reason, entry.basis
FROM verdict v, LATERAL audit_append(
    {wid}, {rid}, {aid}, {attempt}, v.run_id, v.tenant, v.user_name, v.agent,
    {syscall}, {resource},
    CASE WHEN v.refusal IS NULL THEN {decision} ELSE 'deny' END,
    CASE WHEN v.refusal IS NULL THEN {rule} END,
    CASE v.refusal WHEN 'finished' THEN v.finished WHEN 'budget' THEN v.over_budget
         ELSE {reason}::text END,
    coalesce(v.refusal, {basis})
) entry
"""
_FIELDS = ("wid", "rid", "aid", "attempt", "syscall", "resource", "decision", "rule", "reason",
           "basis", "run", "metered")  # fmt: skip
_TYPES = {"attempt": "integer", "metered": "boolean"}
_DECIDE = _DECISION_TEMPLATE.format(
    columns="",
    source="(SELECT 1) AS one",
    index="",
    **{name: f"%({name})s" for name in _FIELDS},
)
# Several decisions of one tenant's chain in one statement and one commit (`n` of each field, in
# arrays); each row comes back with its place in the arrays.
_DECIDE_MANY = _DECISION_TEMPLATE.format(
    columns="asked.*,",
    source=(
        "unnest("
        + ", ".join(f"%({name})s::{_TYPES.get(name, 'text')}[]" for name in _FIELDS)
        + f") WITH ORDINALITY AS asked({', '.join(_FIELDS)}, n)"
    ),
    index="v.n,",
    **{name: f"v.{name}" for name in _FIELDS if name not in ("run", "metered")},
    run="asked.run",
    metered="asked.metered",
)
#: The most decisions one statement carries.
MAX_BATCH = 64
# A caller the kernel has no record of: its row goes to the chain of no tenant ('').
_UNATTRIBUTED = """
SELECT 1 FROM audit_append(%s, %s, %s, %s, NULL, NULL, NULL, NULL, %s, %s, %s, %s, %s, %s)
"""


class AuditLog:
    """Writes decisions and outcomes; a redelivered attempt writes nothing twice.

    Decisions on one tenant's chain are committed in groups: appends to a chain are serialised
    by its head's row lock, held until the commit is on disk, so concurrent decisions would
    queue for it one commit at a time. Instead, one statement per tenant is in flight; the
    decisions that arrive meanwhile wait for it to end and go together in the next one, each
    still durable before its syscall runs. A decision that finds no statement in flight goes at
    once, alone.
    """

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        #: Tenants with a decision statement in flight, and the decisions waiting for it.
        self._in_flight: set[str] = set()
        self._waiting: dict[str, list[tuple[dict[str, Any], asyncio.Future[Decision]]]] = {}
        self._groups: set[asyncio.Task[None]] = set()
        #: Decision statements sent for known subjects: fewer than decisions once they group.
        self.decision_statements = 0

    async def record_decision(
        self,
        key: AttemptKey,
        subject: Subject | None,
        syscall: str,
        resource: str,
        decision: Decision,
        *,
        metered: bool = False,
    ) -> Decision:
        """Append the decision on one syscall attempt; return the decision that stands.

        For a known subject the run's liveness (and, for a `metered` syscall, the tenant's token
        budget) is checked in the same statement: a run that has finished, or a tenant over its
        budget, gets a denial recorded as such, whatever the policy said.
        """
        if subject is None:
            await self._insert_unattributed(key, syscall, resource, decision)
            return decision
        params = {
            "wid": key.workflow_id,
            "rid": key.execution_run_id,
            "aid": key.activity_id,
            "attempt": key.attempt,
            "syscall": syscall,
            "resource": resource,
            "decision": decision.word,
            "rule": decision.rule,
            "reason": decision.reason,
            "basis": decision.basis,
            "run": subject.run_id,
            "metered": metered,
        }
        tenant = subject.tenant
        if tenant in self._in_flight:
            decided: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(tenant, []).append((params, decided))
            return await decided
        self._in_flight.add(tenant)
        try:
            [decision] = await self._decide([params])
        finally:
            self._next_group(tenant)
        return decision

    def _next_group(self, tenant: str) -> None:
        """After a statement: the decisions that waited for it go next, together."""
        if tenant not in self._waiting:
            self._in_flight.discard(tenant)
            return
        task = asyncio.get_running_loop().create_task(self._append_waiting(tenant))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _append_waiting(self, tenant: str) -> None:
        group = self._waiting.pop(tenant)
        if len(group) > MAX_BATCH:
            self._waiting[tenant] = group[MAX_BATCH:]
            group = group[:MAX_BATCH]
        try:
            decisions = await self._decide([params for params, _ in group])
        except Exception as exc:  # noqa: BLE001 - each waiting syscall fails with it
            for _, decided in group:
                if not decided.done():
                    decided.set_exception(exc)
        except asyncio.CancelledError:  # the worker is stopping: so are the waiting syscalls
            for _, decided in group:
                decided.cancel()
            raise
        else:
            for (_, decided), decision in zip(group, decisions, strict=True):
                if not decided.done():
                    decided.set_result(decision)
        finally:
            self._next_group(tenant)

    async def _decide(self, group: list[dict[str, Any]]) -> list[Decision]:
        """The group's decisions, in one statement.

        A redelivered attempt gets the row its first delivery wrote: that decision stands.
        """
        self.decision_statements += 1
        async with self._pool.connection() as conn:
            if len(group) == 1:
                cursor = await conn.execute(_DECIDE, group[0])
                rows = {1: row} if (row := await cursor.fetchone()) else {}
            else:
                arrays = {name: [params[name] for params in group] for name in _FIELDS}
                cursor = await conn.execute(_DECIDE_MANY, arrays)
                rows = {row["n"]: row for row in await cursor.fetchall()}
        decisions = []
        for n, params in enumerate(group, start=1):
            row = rows.get(n)
            if row is None:
                decisions.append(
                    Decision(False, None, f"run {params['run']!r} has no record", "identity")
                )
            else:
                decisions.append(
                    Decision(row["decision"] == "allow", row["rule"], row["reason"], row["basis"])
                )
        return decisions

    async def over_budget(self, tenant: str) -> bool:
        """Whether the tenant has used its token budget (in-flight generations not counted)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT coalesce(u.input_tokens + u.output_tokens, 0) >= b.max_tokens AS over"
                " FROM tenant_budgets b LEFT JOIN tenant_usage u ON u.tenant = b.tenant"
                " WHERE b.tenant = %s AND b.max_tokens IS NOT NULL",
                (tenant,),
            )
            row = await cursor.fetchone()
        return bool(row and row["over"])

    async def record_operator(
        self,
        subject: Subject,
        action: str,
        resource: str,
        decision: Decision,
        *,
        key_id: str | None = None,
        within: Connection | None = None,
    ) -> None:
        """Append an operator's or a client's action to the tenant's chain.

        `subject.user` is who acted; the action is, say, a decision on an approval, a run
        submitted or cancelled, or (with no run: `subject.run_id` empty) an edit of the policy.
        `key_id` names the API key the request came with; `within`, a connection whose
        transaction the row belongs to.
        """
        async with connection(self._pool, within) as conn:
            await conn.execute(
                "SELECT 1 FROM audit_append(%s, 'operator', %s, 1, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s)",
                (
                    subject.run_id or f"operator:{subject.user}", f"{action}/{uuid.uuid4()}",
                    subject.run_id or None, subject.tenant, subject.user, subject.agent, action,
                    resource, decision.word, decision.rule, decision.reason, decision.basis,
                    key_id,
                ),
            )  # fmt: skip

    async def _insert_unattributed(
        self, key: AttemptKey, syscall: str, resource: str, decision: Decision
    ) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                _UNATTRIBUTED,
                (
                    key.workflow_id,
                    key.execution_run_id,
                    key.activity_id,
                    key.attempt,
                    syscall,
                    resource,
                    decision.word,
                    decision.rule,
                    decision.reason,
                    decision.basis,
                ),
            )

    async def record_result(
        self,
        key: AttemptKey,
        syscall: str,
        *,
        error_type: str | None,
        usage: TokenUsage,
        duration_ms: float,
    ) -> None:
        """Record what an allowed syscall attempt came to, and add its tokens to the tenant's.

        Through the owner's `syscall_result_record` (the kernel's role cannot write the table):
        only for an attempt the audit allowed, with the run and tenant its decision recorded,
        and once, so a redelivered attempt is never counted twice. Its commit does not wait
        for the WAL flush (for this transaction alone): the decision before it was durable, and
        only a crash of PostgreSQL itself within its WAL writer's delay (0.2 s by default) could
        lose this row, and with it the attempt's tokens from the accounting. The next durable
        commit (the next decision, the run's end) flushes it.
        """
        async with self._pool.connection() as conn:
            await conn.execute(
                "SELECT syscall_result_record(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    key.workflow_id, key.execution_run_id, key.activity_id, key.attempt, syscall,
                    error_type, usage.input_tokens, usage.output_tokens, duration_ms,
                ),
            )  # fmt: skip
