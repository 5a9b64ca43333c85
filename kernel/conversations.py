"""The context manager's conversation store: messages in PostgreSQL, referenced by id.

A conversation belongs to the run that opened it (its workflow id, which continue-as-new
keeps). `llm.chat` with a conversation appends the new messages, generates from the whole
active conversation and appends the reply; workflow histories carry the id and the new turn
only. The active conversation is the system prompt, then the summaries of compacted turns
(folded into the system prompt, so chat templates that insist on alternating roles accept it),
then the turns not yet compacted. Compacted originals are kept, never deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import BaseModel

from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import AccessDenied
from kernos.kernel.syscalls import Message


class StoredMessage(BaseModel):
    """One message of a conversation, as kept."""

    seq: int
    role: str
    content: str
    is_summary: bool
    summarized_by: int | None


class ConversationStore:
    """Reads and writes `conversations` and `conversation_messages`."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def open(
        self,
        conversation_id: str,
        *,
        run_id: str,
        tenant: str,
        agent: str,
        model: str,
        system: str | None,
    ) -> None:
        """Create the conversation, with its system prompt (a retried open changes nothing)."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "INSERT INTO conversations (id, run_id, tenant, agent, model)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                (conversation_id, run_id, tenant, agent, model),
            )
            if await cursor.fetchone() is not None and system:
                await self._insert(
                    conn, conversation_id, [Message(role="system", content=system)], "open"
                )

    async def append(
        self, conversation_id: str, run_id: str, messages: Sequence[Message], written_by: str,
        *, first_part: int = 0,
    ) -> None:  # fmt: skip
        """Append `messages` once per (`written_by`, part), in order."""
        async with self._pool.connection() as conn, conn.transaction():
            await self._owned(conn, conversation_id, run_id, lock=True)
            await self._insert(conn, conversation_id, messages, written_by, first_part)

    async def active(self, conversation_id: str, run_id: str) -> list[StoredMessage]:
        """The messages the model sees, in context order (summaries after the system prompt)."""
        stored = [m for m in await self.history(conversation_id, run_id) if m.summarized_by is None]
        system = [m for m in stored if m.role == "system" and not m.is_summary]
        summaries = [m for m in stored if m.is_summary]
        rest = [m for m in stored if m.role != "system"]
        return system + summaries + rest

    async def history(self, conversation_id: str, run_id: str) -> list[StoredMessage]:
        """Every message ever written, compacted ones included, in the order written."""
        async with self._pool.connection() as conn:
            await self._owned(conn, conversation_id, run_id)
            cursor = await conn.execute(
                "SELECT seq, role, content, is_summary, summarized_by FROM conversation_messages"
                " WHERE conversation_id = %s ORDER BY seq",
                (conversation_id,),
            )
            rows = await cursor.fetchall()
        return [StoredMessage.model_validate(row) for row in rows]

    async def summarize(
        self, conversation_id: str, run_id: str, seqs: Sequence[int], summary: str, written_by: str
    ) -> int | None:
        """Replace the messages `seqs` with `summary` in the active conversation.

        Returns the summary's seq, or None if a retry finds the work done.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await self._owned(conn, conversation_id, run_id, lock=True)
            seq = await self._insert(
                conn, conversation_id, [Message(role="system", content=summary)], written_by,
                is_summary=True,
            )  # fmt: skip
            if seq is None:
                return None
            await conn.execute(
                "UPDATE conversation_messages SET summarized_by = %s"
                " WHERE conversation_id = %s AND seq = ANY(%s) AND summarized_by IS NULL",
                (seq, conversation_id, list(seqs)),
            )
            return seq

    async def _owned(
        self,
        conn: AsyncConnection[DictRow],
        conversation_id: str,
        run_id: str,
        *,
        lock: bool = False,
    ) -> None:
        # Locking serialises writers of one conversation, so seqs are assigned without races.
        cursor = await conn.execute(
            "SELECT run_id FROM conversations WHERE id = %s" + (" FOR UPDATE" if lock else ""),
            (conversation_id,),
        )
        row = await cursor.fetchone()
        if row is None or row["run_id"] != run_id:
            # One answer for both: a run learns nothing of other runs' conversations.
            raise AccessDenied(f"run {run_id!r} has no conversation {conversation_id!r}")

    async def _insert(
        self,
        conn: AsyncConnection[DictRow],
        conversation_id: str,
        messages: Sequence[Message],
        written_by: str,
        first_part: int = 0,
        *,
        is_summary: bool = False,
    ) -> int | None:
        last = None
        for part, message in enumerate(messages, start=first_part):
            cursor = await conn.execute(
                "INSERT INTO conversation_messages"
                " (conversation_id, seq, role, content, is_summary, written_by, part)"
                " SELECT %(id)s, coalesce(max(seq), -1) + 1, %(role)s, %(content)s,"
                "  %(summary)s, %(writer)s, %(part)s"
                " FROM conversation_messages WHERE conversation_id = %(id)s"
                " ON CONFLICT (conversation_id, written_by, part) DO NOTHING RETURNING seq",
                {
                    "id": conversation_id,
                    "role": message.role,
                    "content": message.content,
                    "summary": is_summary,
                    "writer": written_by,
                    "part": part,
                },
            )
            row = await cursor.fetchone()
            last = None if row is None else int(row["seq"])
        return last
