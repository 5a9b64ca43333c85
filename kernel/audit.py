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
        reason: str | None = None,
    ) -> None:
        """Append the decision on one syscall attempt."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO audit (workflow_id, execution_run_id, activity_id, attempt,"
                " run_id, tenant, user_name, agent, syscall, resource, decision, rule, reason)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (workflow_id, execution_run_id, activity_id, attempt) DO NOTHING",
                (
                    key.workflow_id,
                    key.execution_run_id,
                    key.activity_id,
                    key.attempt,
                    subject.run_id if subject else None,
                    subject.tenant if subject else None,
                    subject.user if subject else None,
                    subject.agent if subject else None,
                    syscall,
                    resource,
                    decision.word,
                    decision.rule,
                    reason,
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
