"""The memory manager's store: items with embeddings in PostgreSQL (pgvector), by scope.

Every statement is bounded to one tenant and one scope, so a search never sees another
tenant's or another scope's rows. A scope of fewer than `[memory] exact_below` items is ranked
exactly, from its own index: at that size faster than the shared HNSW index, which has to walk
past other scopes' rows. A larger scope goes through the HNSW index; a filtered scan there
would stop at `hnsw.ef_search` candidates and return fewer than `k` rows, so pgvector's
iterative scan (`hnsw.iterative_scan`, set per transaction) keeps scanning until `k` rows of
the scope are found. Quotas count a tenant's agent's items; adding past the quota
evicts that agent's least recently used items in the same transaction, under a lock per
tenant and agent, so two adds cannot both slip under it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from kernos.kernel.config import MemorySettings
from kernos.kernel.db.pool import Pool
from kernos.kernel.errors import NotFound
from kernos.kernel.syscalls import MemoryItem, MetadataValue

_COLUMNS = "id, scope, owner, content, metadata, created_at, updated_at"
#: A past conversation turn's metadata, as search results show it and filters match it.
_TURN_METADATA = (
    "jsonb_build_object('conversation', m.conversation_id, 'run_id', c.run_id,"
    " 'role', CASE WHEN m.is_summary THEN 'summary' ELSE m.role END)"
)


def vector_literal(vector: Sequence[float]) -> str:
    """Pgvector's text form; no adapter to register, so any connection can send it."""
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


def _item(row: dict[str, Any]) -> MemoryItem:
    return MemoryItem(
        id=str(row["id"]),
        scope=row["scope"],
        owner=row["owner"],
        content=row["content"],
        metadata=row["metadata"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        score=None if row.get("distance") is None else 1.0 - float(row["distance"]),
    )


def _uuid(item_id: str, scope: str) -> uuid.UUID:
    try:
        return uuid.UUID(item_id)
    except ValueError:
        raise NotFound(f"no memory item {item_id!r} in {scope}") from None


NEAREST = (
    f"WITH nearest AS MATERIALIZED ("
    f" SELECT {_COLUMNS}, embedding <=> %(query)s::vector AS distance"
    f" FROM memories WHERE tenant = %(tenant)s AND scope = %(scope)s"
    f" AND metadata @> %(filter)s"
    f" ORDER BY embedding <=> %(query)s::vector LIMIT %(k)s)"
    # Relaxed order can return the k nearest slightly out of order: sort them again, by an
    # expression, or PostgreSQL 17+ takes the inner ORDER BY as the CTE's order and skips it.
    f" SELECT * FROM nearest WHERE 1 - distance >= %(min_score)s ORDER BY distance + 0"
)
#: The same search, exact: ordered by an expression the HNSW index cannot serve, so the scope's
#: own index finds its rows and a top-k sort ranks them.
NEAREST_EXACT = (
    f"SELECT {_COLUMNS}, embedding <=> %(query)s::vector AS distance"
    f" FROM memories WHERE tenant = %(tenant)s AND scope = %(scope)s"
    f" AND metadata @> %(filter)s AND 1 - (embedding <=> %(query)s::vector) >= %(min_score)s"
    f" ORDER BY (embedding <=> %(query)s::vector) + 0 LIMIT %(k)s"
)


async def _scan_settings(conn: Any, ef_search: int, *, iterative: bool) -> None:
    await conn.execute(
        "SELECT set_config('hnsw.ef_search', %s, true),"
        " set_config('hnsw.iterative_scan', %s, true)",
        (str(ef_search), "relaxed_order" if iterative else "off"),
    )


async def nearest(
    conn: Any,
    *,
    tenant: str,
    scope: str,
    embedding: Sequence[float],
    k: int,
    filter: dict[str, MetadataValue],
    min_score: float | None,
    ef_search: int,
    exact_below: int = 0,
    iterative: bool = True,
) -> list[dict[str, Any]]:
    """The nearest rows of one scope, inside the caller's transaction (settings are local).

    A scope of fewer than `exact_below` items is ranked exactly; a larger one through the
    HNSW index, with the iterative scan unless `iterative` is off.
    """
    if exact_below > 0:
        cursor = await conn.execute(
            "SELECT count(*) AS n FROM (SELECT 1 FROM memories"
            " WHERE tenant = %s AND scope = %s LIMIT %s) AS bounded",
            (tenant, scope, exact_below),
        )
        row = await cursor.fetchone()
        exact = row is not None and int(row["n"]) < exact_below
    else:
        exact = False
    await _scan_settings(conn, max(ef_search, k), iterative=iterative)
    # Never prepared: psycopg prepares a statement after 5 runs, and the generic plan, blind to
    # the tenant and scope, is slower (measured on a scope of 1,000 in 100,000 items: 3.7 ms
    # p50 unprepared, 10.9 ms prepared).
    cursor = await conn.execute(
        NEAREST_EXACT if exact else NEAREST,
        {
            "query": vector_literal(embedding),
            "tenant": tenant,
            "scope": scope,
            "filter": Jsonb(filter),
            "k": k,
            "min_score": -2.0 if min_score is None else min_score,
        },
        prepare=False,
    )
    return list(await cursor.fetchall())


class MemoryStore:
    """Reads and writes `memories`."""

    def __init__(self, pool: Pool, settings: MemorySettings) -> None:
        self._pool = pool
        self.settings = settings

    async def add(
        self,
        *,
        tenant: str,
        scope: str,
        owner: str,
        content: str,
        metadata: dict[str, MetadataValue],
        embedding: Sequence[float],
        written_by: str,
    ) -> tuple[MemoryItem, list[str]]:
        """Insert the item once per `written_by`; return it and the ids evicted for it."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"memory/{tenant}/{owner}",),
            )
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM memories WHERE written_by = %s", (written_by,)
            )
            existing = await cursor.fetchone()
            if existing is not None:  # a retried syscall: the item is there already
                return _item(existing), []
            cursor = await conn.execute(
                f"INSERT INTO memories (id, tenant, scope, owner, content, metadata, embedding,"
                f" written_by) VALUES (%s, %s, %s, %s, %s, %s, %s::vector, %s)"
                f" RETURNING {_COLUMNS}",
                (
                    uuid.uuid4(), tenant, scope, owner, content, Jsonb(metadata),
                    vector_literal(embedding), written_by,
                ),
            )  # fmt: skip
            row = await cursor.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO memory_use (id, tenant, owner) VALUES (%s, %s, %s)",
                (row["id"], tenant, owner),
            )
            cursor = await conn.execute(
                "DELETE FROM memories WHERE id IN ("
                " SELECT id FROM memory_use WHERE tenant = %(tenant)s AND owner = %(owner)s"
                " AND id <> %(new)s ORDER BY used_at, id"
                " LIMIT GREATEST(0, (SELECT count(*) FROM memory_use"
                "  WHERE tenant = %(tenant)s AND owner = %(owner)s) - %(quota)s))"
                " RETURNING id",
                {
                    "tenant": tenant,
                    "owner": owner,
                    "new": row["id"],
                    "quota": self.settings.max_items_per_agent,
                },
            )
            evicted = [str(r["id"]) for r in await cursor.fetchall()]
        return _item(row), evicted

    async def search(
        self,
        *,
        tenant: str,
        scope: str,
        embedding: Sequence[float],
        k: int,
        filter: dict[str, MetadataValue],
        min_score: float | None,
    ) -> list[MemoryItem]:
        """The `k` items of the scope nearest to `embedding`, best first; marks them used."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = await nearest(
                conn, tenant=tenant, scope=scope, embedding=embedding, k=k, filter=filter,
                min_score=min_score, ef_search=self.settings.ef_search,
                exact_below=self.settings.exact_below,
            )  # fmt: skip
            await self._touch(conn, [row["id"] for row in rows])
        return [_item(row) for row in rows]

    async def get(self, *, tenant: str, scope: str, item_id: str) -> MemoryItem:
        """One item of the scope; marks it used."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM memories WHERE id = %s AND tenant = %s AND scope = %s",
                (_uuid(item_id, scope), tenant, scope),
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"no memory item {item_id!r} in {scope}")
            await self._touch(conn, [row["id"]])
        return _item(row)

    async def page(
        self,
        *,
        tenant: str,
        scope: str,
        filter: dict[str, MetadataValue],
        limit: int,
        before: str | None = None,
    ) -> list[MemoryItem]:
        """The scope's items, newest first, after the item `before` (the previous page's last)."""
        after = ""
        params: dict[str, Any] = {
            "tenant": tenant, "scope": scope, "filter": Jsonb(filter), "limit": limit,
        }  # fmt: skip
        if before is not None:
            after = (
                " AND (created_at, id) < (SELECT created_at, id FROM memories"
                " WHERE id = %(before)s AND tenant = %(tenant)s AND scope = %(scope)s)"
            )
            params["before"] = _uuid(before, scope)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM memories WHERE tenant = %(tenant)s"
                f" AND scope = %(scope)s AND metadata @> %(filter)s{after}"
                f" ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
                params,
            )
            rows = await cursor.fetchall()
        return [_item(row) for row in rows]

    async def update(
        self,
        *,
        tenant: str,
        scope: str,
        item_id: str,
        content: str | None,
        embedding: Sequence[float] | None,
        metadata: dict[str, MetadataValue] | None,
    ) -> MemoryItem:
        """Replace the item's content and embedding, or its metadata, or both."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"UPDATE memories SET content = coalesce(%(content)s, content),"
                f" embedding = coalesce(%(embedding)s::vector, embedding),"
                f" metadata = coalesce(%(metadata)s, metadata),"
                f" updated_at = now()"
                f" WHERE id = %(id)s AND tenant = %(tenant)s AND scope = %(scope)s"
                f" RETURNING {_COLUMNS}",
                {
                    "content": content,
                    "embedding": None if embedding is None else vector_literal(embedding),
                    "metadata": None if metadata is None else Jsonb(metadata),
                    "id": _uuid(item_id, scope),
                    "tenant": tenant,
                    "scope": scope,
                },
            )
            row = await cursor.fetchone()
            if row is not None:
                await self._touch(conn, [row["id"]])
        if row is None:
            raise NotFound(f"no memory item {item_id!r} in {scope}")
        return _item(row)

    async def delete(self, *, tenant: str, scope: str, item_id: str) -> bool:
        """Forget the item; False if the scope does not hold it (already deleted)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM memories WHERE id = %s AND tenant = %s AND scope = %s RETURNING id",
                (_uuid(item_id, scope), tenant, scope),
            )
            return await cursor.fetchone() is not None

    async def unembedded_turns(
        self, *, tenant: str, agent: str, limit: int
    ) -> list[tuple[str, int, str]]:
        """Turns of the agent's past conversations not embedded yet: (conversation, seq, text).

        System prompts are left out: they repeat in every conversation of an agent.
        """
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT m.conversation_id, m.seq, m.content FROM conversation_messages m"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE c.tenant = %s AND c.agent = %s AND m.embedding IS NULL"
                " AND (m.role <> 'system' OR m.is_summary) ORDER BY m.created_at LIMIT %s",
                (tenant, agent, limit),
            )
            rows = await cursor.fetchall()
        return [(row["conversation_id"], row["seq"], row["content"]) for row in rows]

    async def embed_turns(self, turns: Sequence[tuple[str, int, Sequence[float]]]) -> None:
        """Store the embeddings of conversation turns."""
        async with self._pool.connection() as conn, conn.cursor() as cursor:
            await cursor.executemany(
                "UPDATE conversation_messages SET embedding = %s::vector"
                " WHERE conversation_id = %s AND seq = %s",
                [(vector_literal(vector), conv, seq) for conv, seq, vector in turns],
            )

    async def search_conversations(
        self,
        *,
        tenant: str,
        agent: str,
        embedding: Sequence[float],
        k: int,
        filter: dict[str, MetadataValue],
        min_score: float | None,
    ) -> list[MemoryItem]:
        """The agent's past turns nearest to `embedding`, best first.

        An item's id is `<conversation>/<seq>`; its metadata names the conversation, the run
        and the role, and filters match those.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await _scan_settings(conn, max(self.settings.ef_search, k), iterative=True)
            cursor = await conn.execute(
                "WITH nearest AS MATERIALIZED ("
                " SELECT m.conversation_id || '/' || m.seq AS id, 'conversations' AS scope,"
                "  c.agent AS owner, m.content, m.created_at, m.created_at AS updated_at,"
                f"  {_TURN_METADATA} AS metadata, m.embedding <=> %(query)s::vector AS distance"
                " FROM conversation_messages m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE c.tenant = %(tenant)s AND c.agent = %(agent)s"
                f" AND m.embedding IS NOT NULL AND {_TURN_METADATA} @> %(filter)s"
                " ORDER BY m.embedding <=> %(query)s::vector LIMIT %(k)s)"
                " SELECT * FROM nearest WHERE 1 - distance >= %(min_score)s ORDER BY distance + 0",
                {
                    "query": vector_literal(embedding),
                    "tenant": tenant,
                    "agent": agent,
                    "k": k,
                    "filter": Jsonb(filter),
                    "min_score": -2.0 if min_score is None else min_score,
                },
                prepare=False,  # as in `nearest`: the generic plan ignores the agent
            )
            rows = await cursor.fetchall()
        return [_item(row) for row in rows]

    @staticmethod
    async def _touch(conn: Any, ids: list[Any]) -> None:
        if ids:
            # A use mark only orders eviction: losing the last few to a crash costs nothing, so
            # its commit does not wait for the WAL flush (one search in ~100 waited 300 ms for
            # the disk here, bench/memory.py).
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute("UPDATE memory_use SET used_at = now() WHERE id = ANY(%s)", (ids,))
