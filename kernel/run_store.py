"""The kernel's record of runs: written at admission, read to know who a syscall's caller is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from kernos.kernel.db.pool import Connection, Pool, connection
from kernos.kernel.errors import RateLimited, RunNotFound
from kernos.kernel.syscalls import RunInput, RunOutcome, RunSpec, Scheduling, SyscallLimits

FINISHED = frozenset({"completed", "failed", "cancelled"})


class RunRecord(BaseModel):
    """One row of `runs`: the identity every syscall of the run is judged by."""

    run_id: str
    first_execution_run_id: str | None
    tenant: str
    user: str
    agent: str
    priority: int
    model: str
    spec: RunSpec
    scheduling: Scheduling
    """How its syscalls are scheduled, fixed at admission."""
    limits: SyscallLimits
    """Its syscalls' timeouts and retries, fixed at admission."""
    api_key_id: str | None = None
    """The API key that submitted it; None for the operator on the kernel's host."""
    status: str
    created_at: datetime
    finished_at: datetime | None
    output: str | None
    error: str | None
    input_tokens: int
    output_tokens: int

    def admitted(self) -> RunRecord:
        """What admission fixed, without what can be large (the task, the output).

        Kernel workers keep up to 10,000 of these: with tasks of up to `max_task_bytes` each,
        whole records would cost gigabytes.
        """
        spec = self.spec.model_copy(update={"task": "(not kept)"})
        return self.model_copy(update={"spec": spec, "output": None, "error": None})

    @property
    def finished(self) -> bool:
        """Whether the run has ended; a finished run's syscalls are denied."""
        return self.status in FINISHED

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """Build from a `runs` row."""
        return cls(user=row["user_name"], **{k: v for k, v in row.items() if k != "user_name"})


class RunStore:
    """Reads and writes the `runs` table."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def admit(
        self, run: RunInput, *, api_key_id: str | None = None, key_running: int | None = None
    ) -> None:
        """Record a run before its workflow starts: who it is for, and how it is scheduled.

        RateLimited, and nothing recorded, if the API key has `key_running` runs going already
        (counted under a lock of the key's, so concurrent admissions cannot pass it together).
        """
        spec = run.spec
        assert spec.model is not None, "admission fills in the model"
        async with self._pool.connection() as conn, conn.transaction():
            if api_key_id is not None and key_running is not None:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('runs of key ' || %s, 0))",
                    (api_key_id,),
                )
                cursor = await conn.execute(
                    "SELECT count(*) AS going FROM runs"
                    " WHERE api_key_id = %s AND finished_at IS NULL",
                    (api_key_id,),
                )
                row = await cursor.fetchone()
                going = int(row["going"]) if row is not None else 0
                if going >= key_running:
                    raise RateLimited(
                        f"API key {api_key_id} has {going} runs going, the most it may "
                        f"([gateway] key_running_runs = {key_running}): submit again once one "
                        "has ended",
                        retry_after_s=1.0,
                    )
            await conn.execute(
                "INSERT INTO runs (run_id, tenant, user_name, agent, priority, model, spec,"
                " scheduling, limits, api_key_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    run.run_id,
                    spec.tenant,
                    spec.user,
                    spec.agent,
                    spec.priority,
                    spec.model,
                    spec.model_dump_json(),
                    run.scheduling.model_dump_json(),
                    run.limits.model_dump_json(),
                    api_key_id,
                ),
            )

    async def forget(self, run_id: str) -> None:
        """Remove the record of a run whose workflow never started."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM runs WHERE run_id = %s AND first_execution_run_id IS NULL",
                (run_id,),
            )

    async def bind(self, run_id: str, first_execution_run_id: str) -> str:
        """Bind the record to its workflow's first execution; return the bound id."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE runs SET first_execution_run_id = %s, status = CASE status"
                " WHEN 'admitted' THEN 'running' ELSE status END"
                " WHERE run_id = %s AND first_execution_run_id IS NULL",
                (first_execution_run_id, run_id),
            )
        record = await self.get(run_id)
        assert record.first_execution_run_id is not None
        return record.first_execution_run_id

    async def get(self, run_id: str) -> RunRecord:
        """The record of `run_id`, or RunNotFound."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT * FROM runs WHERE run_id = %s", (run_id,))
            row = await cursor.fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return RunRecord.from_row(row)

    async def recent(self, *, limit: int = 50, tenant: str | None = None) -> list[RunRecord]:
        """The newest runs first."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM runs WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)"
                " ORDER BY created_at DESC LIMIT %(limit)s",
                {"tenant": tenant, "limit": limit},
            )
            rows = await cursor.fetchall()
        return [RunRecord.from_row(row) for row in rows]

    async def of_user(
        self, tenant: str, user: str, qualified: str, *, status: str | None = None,
        agent: str | None = None, before: datetime | None = None, limit: int = 50,
    ) -> list[RunRecord]:  # fmt: skip
        """A user's runs, newest first: `user` in `tenant`, and as `qualified` anywhere else.

        Only those with `status` and `agent` if given, and created before `before`.
        """
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM runs WHERE ((tenant = %(tenant)s AND user_name = %(user)s)"
                "   OR (tenant <> %(tenant)s AND user_name = %(qualified)s))"
                " AND (%(status)s::text IS NULL OR status = %(status)s)"
                " AND (%(agent)s::text IS NULL OR agent = %(agent)s)"
                " AND (%(before)s::timestamptz IS NULL OR created_at < %(before)s)"
                " ORDER BY created_at DESC LIMIT %(limit)s",
                {"tenant": tenant, "user": user, "qualified": qualified, "status": status,
                 "agent": agent, "before": before, "limit": limit},
            )  # fmt: skip
            rows = await cursor.fetchall()
        return [RunRecord.from_row(row) for row in rows]

    async def finish(self, run_id: str, outcome: RunOutcome) -> None:
        """Record how a run ended; from then on its syscalls are denied.

        The run's tokens are the kernel's own count (its `syscall_results`), not the usage the
        workflow reports: that comes from agent code, which could report anything.
        """
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE runs SET status = %(status)s, output = %(output)s, error = %(error)s,"
                " finished_at = now(),"
                " input_tokens = (SELECT coalesce(sum(input_tokens), 0) FROM syscall_results"
                "                 WHERE run_id = %(run)s),"
                " output_tokens = (SELECT coalesce(sum(output_tokens), 0) FROM syscall_results"
                "                  WHERE run_id = %(run)s)"
                " WHERE run_id = %(run)s AND finished_at IS NULL",
                {
                    "status": outcome.status,
                    "output": outcome.output,
                    "error": outcome.error,
                    "run": run_id,
                },
            )

    async def record_end(
        self, run_id: str, outcome: RunOutcome, *, within: Connection | None = None
    ) -> RunRecord | None:
        """Record how Temporal says a run ended, over what it said.

        The record as it was before; None if it said so already (or the run is not ours). The
        output and error are agent code's text: a NUL, which PostgreSQL's text cannot hold,
        is stored as U+FFFD.
        """
        async with connection(self._pool, within) as conn:
            cursor = await conn.execute(
                "WITH before AS (SELECT * FROM runs WHERE run_id = %(run)s FOR UPDATE)"
                " UPDATE runs SET status = %(status)s, output = %(output)s, error = %(error)s,"
                " finished_at = coalesce(runs.finished_at, now()),"
                " input_tokens = (SELECT coalesce(sum(input_tokens), 0) FROM syscall_results"
                "                 WHERE run_id = %(run)s),"
                " output_tokens = (SELECT coalesce(sum(output_tokens), 0) FROM syscall_results"
                "                  WHERE run_id = %(run)s)"
                " FROM before WHERE runs.run_id = before.run_id"
                " AND (runs.status, runs.error) IS DISTINCT FROM (%(status)s, %(error)s)"
                " RETURNING before.*",
                {
                    "status": outcome.status,
                    "output": _storable(outcome.output),
                    "error": _storable(outcome.error),
                    "run": run_id,
                },
            )
            row = await cursor.fetchone()
        return None if row is None else RunRecord.from_row(row)

    async def statuses(self, run_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """The recorded status and error of each of `run_ids` this kernel admitted."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT run_id, status, error FROM runs WHERE run_id = ANY(%s)", (run_ids,)
            )
            rows = await cursor.fetchall()
        return {row["run_id"]: (row["status"], row["error"]) for row in rows}


def _storable(text: str | None) -> str | None:
    return None if text is None else text.replace("\x00", "\ufffd")
