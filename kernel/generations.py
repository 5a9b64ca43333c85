"""The context manager's store of suspended generations: where a time slice leaves off.

A generation cut at the end of its slice is saved here (request, token ids so far, text) under
an id; the continuation syscall carries only that id, so a run's history grows by the id and the
slice's new text, never by the prompt again. Rows belong to the run that made them: another
run's continuation is refused.
"""

from __future__ import annotations

from pydantic import BaseModel

from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import AccessDenied
from kernos.kernel.llm.base import Snapshot
from kernos.kernel.syscalls import LLMRequest


class SuspendedGeneration(BaseModel):
    """A generation between two slices."""

    id: str
    run_id: str
    request: LLMRequest
    snapshot: Snapshot
    charged_before: int
    written_by: str
    slices: int
    finished: bool

    def charged_for(self, activity: str) -> int:
        """Output tokens charged before `activity`: all of them, unless it wrote this state."""
        return self.charged_before if activity == self.written_by else self.snapshot.length


class GenerationStore:
    """Reads and writes the `generations` table."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def save(
        self,
        generation_id: str,
        run_id: str,
        request: LLMRequest,
        snapshot: Snapshot,
        *,
        charged_before: int,
        written_by: str,
        finished: bool = False,
    ) -> None:
        """Record the generation's state after a slice (idempotent per activity)."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO generations (id, run_id, model, request, tokens, text, counted,"
                " charged_before, written_by, finished)"
                " VALUES (%(id)s, %(run)s, %(model)s, %(request)s, %(tokens)s, %(text)s,"
                " %(counted)s, %(charged)s, %(writer)s, %(finished)s)"
                " ON CONFLICT (id) DO UPDATE SET tokens = EXCLUDED.tokens, text = EXCLUDED.text,"
                " counted = EXCLUDED.counted,"
                " charged_before = EXCLUDED.charged_before, written_by = EXCLUDED.written_by,"
                " finished = EXCLUDED.finished, updated_at = now(),"
                " slices = generations.slices"
                "   + CASE WHEN generations.written_by = EXCLUDED.written_by THEN 0 ELSE 1 END"
                " WHERE generations.run_id = EXCLUDED.run_id",
                {
                    "id": generation_id,
                    "run": run_id,
                    "model": request.model,
                    "request": request.model_dump_json(),
                    "tokens": snapshot.tokens,
                    "text": snapshot.text,
                    "counted": snapshot.counted,
                    "charged": charged_before,
                    "writer": written_by,
                    "finished": finished,
                },
            )

    async def load(self, generation_id: str, run_id: str) -> SuspendedGeneration:
        """The generation `generation_id` of `run_id`; AccessDenied if it is not the run's."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT * FROM generations WHERE id = %s", (generation_id,))
            row = await cursor.fetchone()
        if row is None or row["run_id"] != run_id:
            # One answer for both: a run learns nothing about other runs' generations.
            raise AccessDenied(f"run {run_id!r} has no suspended generation {generation_id!r}")
        return SuspendedGeneration(
            id=row["id"],
            run_id=row["run_id"],
            request=LLMRequest.model_validate(row["request"]),
            snapshot=Snapshot(tokens=row["tokens"], text=row["text"], counted=row["counted"]),
            charged_before=row["charged_before"],
            written_by=row["written_by"],
            slices=row["slices"],
            finished=row["finished"],
        )
