"""The audit log: one append-only row per access decision, keyed by the activity attempt."""

from __future__ import annotations

from dataclasses import dataclass

from kernos.kernel.access import Decision, Subject
from kernos.kernel.db.pool import Pool
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
_DECIDE = """
INSERT INTO audit (workflow_id, execution_run_id, activity_id, attempt, run_id, tenant,
                   user_name, agent, syscall, resource, decision, rule, reason)
SELECT %(wid)s, %(rid)s, %(aid)s, %(attempt)s, r.run_id, r.tenant, r.user_name, r.agent,
       %(syscall)s, %(resource)s,
       CASE WHEN r.finished_at IS NULL THEN %(decision)s ELSE 'deny' END,
       CASE WHEN r.finished_at IS NULL THEN %(rule)s END,
       CASE WHEN r.finished_at IS NULL THEN %(reason)s::text
            ELSE format('run %%L is %%s; it makes no syscalls', r.run_id, r.status) END
FROM runs r WHERE r.run_id = %(run)s
ON CONFLICT (workflow_id, execution_run_id, activity_id, attempt) DO NOTHING
RETURNING decision, rule, reason
"""
_DECIDED = """
SELECT decision, rule, reason FROM audit
WHERE workflow_id = %(wid)s AND execution_run_id = %(rid)s AND activity_id = %(aid)s
  AND attempt = %(attempt)s
"""


class AuditLog:
    """Writes decisions and outcomes; a redelivered attempt writes nothing twice."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record_decision(
        self,
        key: AttemptKey,
        subject: Subject | None,
        syscall: str,
        resource: str,
        decision: Decision,
    ) -> Decision:
        """Append the decision on one syscall attempt; return the decision that stands.

        For a known subject the run's liveness is checked in the same statement: a run that has
        finished gets a denial, recorded as such, whatever the policy said.
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
            "run": subject.run_id,
        }
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_DECIDE, params)
            row = await cursor.fetchone()
            if row is None:  # this attempt was decided before (a redelivery): that stands
                cursor = await conn.execute(_DECIDED, params)
                row = await cursor.fetchone()
        if row is None:
            return Decision(False, None, f"run {subject.run_id!r} has no record")
        return Decision(row["decision"] == "allow", row["rule"], row["reason"])

    async def _insert_unattributed(
        self, key: AttemptKey, syscall: str, resource: str, decision: Decision
    ) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO audit (workflow_id, execution_run_id, activity_id, attempt,"
                " syscall, resource, decision, rule, reason)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (workflow_id, execution_run_id, activity_id, attempt) DO NOTHING",
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
                ),
            )

    async def record_result(
        self,
        key: AttemptKey,
        run_id: str,
        syscall: str,
        *,
        error_type: str | None,
        usage: TokenUsage,
        duration_ms: float,
    ) -> None:
        """Record what an allowed syscall attempt came to, with the tokens it used."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO syscall_results (workflow_id, execution_run_id, activity_id,"
                " attempt, run_id, syscall, outcome, error_type, input_tokens, output_tokens,"
                " duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    key.workflow_id,
                    key.execution_run_id,
                    key.activity_id,
                    key.attempt,
                    run_id,
                    syscall,
                    "ok" if error_type is None else "error",
                    error_type,
                    usage.input_tokens,
                    usage.output_tokens,
                    duration_ms,
                ),
            )
