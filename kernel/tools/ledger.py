"""The tool manager's ledger: each tool call's arguments and outcome, once per syscall."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from kernos.kernel.access import Subject
from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import InvalidRequest


@dataclass(frozen=True)
class CallKey:
    """The syscall a tool call belongs to: Temporal's ids, never the agent's claims."""

    workflow_id: str
    execution_run_id: str
    activity_id: str

    def idempotency_key(self) -> str:
        """The same for every attempt of this call, and for no other call."""
        joined = "\x1f".join((self.workflow_id, self.execution_run_id, self.activity_id))
        return hashlib.sha256(joined.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Recorded:
    """What an earlier attempt of the same call left."""

    status: Literal["started", "ok", "error"]
    attempts: int
    result: str | None
    error_type: str | None


class ToolCallStore:
    """Reads and writes `tool_calls`."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def begin(
        self, key: CallKey, caller: Subject, tool: str, call_id: str, arguments: str
    ) -> Recorded | None:
        """Record the call as started; None if it is new, else what earlier attempts left.

        The same key with other arguments is refused: activity ids restart after
        continue-as-new and agent code can choose them, so a key alone proves nothing.
        """
        digest = hashlib.sha256(f"{tool}\x1f{arguments}".encode()).digest()
        params = {
            "wid": key.workflow_id, "rid": key.execution_run_id, "aid": key.activity_id,
            "run": caller.run_id, "tenant": caller.tenant, "agent": caller.agent, "tool": tool,
            "call_id": call_id, "digest": digest, "arguments": arguments,
        }  # fmt: skip
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO tool_calls (workflow_id, execution_run_id, activity_id, run_id,"
                " tenant, agent, tool, call_id, input_sha256, arguments, status)"
                " VALUES (%(wid)s, %(rid)s, %(aid)s, %(run)s, %(tenant)s, %(agent)s, %(tool)s,"
                " %(call_id)s, %(digest)s, %(arguments)s, 'started')"
                " ON CONFLICT DO NOTHING RETURNING 1",
                params,
            )
            if await cursor.fetchone() is not None:
                return None
            cursor = await conn.execute(
                "UPDATE tool_calls SET attempts = attempts + 1"
                " WHERE workflow_id = %(wid)s AND execution_run_id = %(rid)s"
                " AND activity_id = %(aid)s"
                " RETURNING status, attempts - 1 AS attempts, result, error_type,"
                " input_sha256 = %(digest)s AS same_input",
                params,
            )
            row = await cursor.fetchone()
        assert row is not None  # the insert conflicted on this key
        if not row["same_input"]:
            raise InvalidRequest(
                f"tool call {key.activity_id!r} of this run was made before with other "
                "arguments; a call's id names one call"
            )
        return Recorded(row["status"], row["attempts"], row["result"], row["error_type"])

    async def finish(
        self, key: CallKey, *, attempt: int, ok: bool, result: str, error_type: str | None
    ) -> None:
        """Record how attempt number `attempt` (1: the call's first) ended, if it is the latest.

        An attempt that Temporal timed out can finish after its retry began: it records nothing.
        """
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE tool_calls SET status = %s, result = %s, error_type = %s,"
                " finished_at = now() WHERE workflow_id = %s AND execution_run_id = %s"
                " AND activity_id = %s AND attempts = %s",
                (
                    "ok" if ok else "error", result, error_type,
                    key.workflow_id, key.execution_run_id, key.activity_id, attempt,
                ),
            )  # fmt: skip
