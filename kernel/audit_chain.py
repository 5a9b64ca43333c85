"""The audit log's hash chains: reading rows, and verifying them independently of the database.

PostgreSQL appends each row to its tenant's chain (`audit_append`, migration 0010). Verification
recomputes every hash here, in Python, from the rows' fields, so a row edited in place (or a
database function replaced) is caught; a chain rewritten consistently from some row on is caught
by the head anchored outside PostgreSQL (`kernel.audit_anchor`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from kernos.kernel.db.pool import Pool

GENESIS = bytes(32)
"""The hash before a chain's first row."""
CANONICAL_VERSION = "kernos-audit-v1"
#: The canonical text of a row that names an API key: version 1's fields, then the key.
KEYED_VERSION = "kernos-audit-v2"
#: Every hashed field, in the order the canonical text has them.
HASHED = (
    "chain",
    "seq",
    "at",
    "workflow_id",
    "execution_run_id",
    "activity_id",
    "attempt",
    "run_id",
    "tenant",
    "user_name",
    "agent",
    "syscall",
    "resource",
    "decision",
    "rule",
    "reason",
    "basis",
)
_COLUMNS = "id, prev_hash, hash, key_id, " + ", ".join(HASHED)


class AuditRow(BaseModel):
    """One decision as the audit log holds it, with its place in its tenant's chain."""

    id: int
    chain: str
    seq: int
    at: datetime
    workflow_id: str
    execution_run_id: str
    activity_id: str
    attempt: int
    run_id: str | None
    tenant: str | None
    user_name: str | None
    agent: str | None
    syscall: str
    resource: str
    decision: str
    rule: str | None
    reason: str | None
    basis: str
    key_id: str | None = None
    """The API key of the request the row records (a gateway's), if any."""
    prev_hash: str
    """Hex."""
    hash: str
    """Hex."""

    @classmethod
    def from_db(cls, row: Mapping[str, Any]) -> AuditRow:
        """A row as psycopg returns it (hashes as bytes)."""
        return cls.model_validate(
            {**row, "prev_hash": bytes(row["prev_hash"]).hex(), "hash": bytes(row["hash"]).hex()}
        )


class ChainHead(BaseModel):
    """The last row of one tenant's chain: what an anchor records."""

    chain: str
    seq: int
    hash: str
    """Hex."""


class AnchoredHeads(BaseModel):
    """Chain heads, as kernel workers send them to the anchor workflow and it carries them."""

    heads: list[ChainHead] = []
    sink_line: int | None = None
    """Where these heads stand in the anchor sink (`[audit] anchor_sink`), from 1."""
    sink_prev: str | None = None
    """The SHA-256 of the sink's line before, hex: so an anchor pins the whole sink up to it."""
    mac: str | None = None
    """HMAC-SHA256 of the rest under `[audit] anchor_key`, hex: who sent them (kernel workers
    sign; the workflow's own carried heads are not signed)."""

    def _text(self) -> bytes:
        heads = [head.model_dump() for head in sorted(self.heads, key=lambda h: (h.chain, h.seq))]
        signed = {"heads": heads, "sink_line": self.sink_line, "sink_prev": self.sink_prev}
        return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: str) -> AnchoredHeads:
        """The same heads, signed with `key`."""
        mac = hmac.new(key.encode(), self._text(), hashlib.sha256).hexdigest()
        return self.model_copy(update={"mac": mac})

    def signed_with(self, key: str) -> bool:
        """Whether a holder of `key` signed these heads."""
        return self.mac is not None and hmac.compare_digest(self.signed(key).mac or "", self.mac)


class ChainCheck(BaseModel):
    """What verifying one chain found."""

    chain: str
    rows: int
    head: ChainHead | None
    anchor: ChainHead | None
    """The furthest head recorded outside PostgreSQL for this chain, if any."""
    anchors: int = 0
    """How many anchors of this chain were checked: every one, not only the furthest."""
    problem: str | None = None
    """The first break, naming its row; None when the chain holds."""
    broken_id: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain holds, up to and including its anchor."""
        return self.problem is None


def canonical_text(row: AuditRow) -> str:
    """The text a row's hash covers; the same as the database's `audit_canonical`."""
    keyed = row.key_id is not None
    parts = [KEYED_VERSION if keyed else CANONICAL_VERSION]
    for name in (*HASHED, "key_id") if keyed else HASHED:
        value = getattr(row, name)
        if value is None:
            parts.append("N")
            continue
        if isinstance(value, datetime):
            text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        else:
            text = str(value)
        parts.append(f"S{len(text.encode('utf-8'))}:{text}")
    return "".join(parts)


def row_hash(prev_hash: bytes, row: AuditRow) -> bytes:
    """SHA-256 of the previous row's hash and this row's canonical text."""
    return hashlib.sha256(prev_hash + canonical_text(row).encode("utf-8")).digest()


async def chain_rows(pool: Pool, chain: str, batch: int = 5000) -> AsyncIterator[AuditRow]:
    """One chain's rows in chain order, read in batches (a chain can be long)."""
    after = 0
    while True:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM audit WHERE chain = %s AND seq > %s ORDER BY seq LIMIT %s",
                (chain, after, batch),
            )
            rows = await cursor.fetchall()
        for row in rows:
            yield AuditRow.from_db(row)
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]


async def select_rows(
    pool: Pool,
    *,
    run: str | None = None,
    tenant: str | None = None,
    since: datetime | None = None,
    last: int | None = None,
) -> AsyncIterator[AuditRow]:
    """Matching rows in the order they were written (only the `last` N if given), in batches."""
    where = ["id > %(after)s"]
    params: dict[str, Any] = {"after": 0, "run": run, "tenant": tenant, "since": since}
    if run is not None:
        where.append("run_id = %(run)s")
    if tenant is not None:
        where.append("tenant = %(tenant)s")
    if since is not None:
        where.append("at >= %(since)s")
    matching = " AND ".join(where)
    async with pool.connection() as conn:
        if last is not None:
            cursor = await conn.execute(
                f"SELECT id FROM audit WHERE {matching} ORDER BY id DESC LIMIT 1 OFFSET %(skip)s",
                {**params, "skip": max(last, 1) - 1},
            )
            first = await cursor.fetchone()
            params["after"] = first["id"] - 1 if first else 0
        while True:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM audit WHERE {matching} ORDER BY id LIMIT 5000", params
            )
            rows = await cursor.fetchall()
            for row in rows:
                yield AuditRow.from_db(row)
            if len(rows) < 5000:
                return
            params["after"] = rows[-1]["id"]


async def heads(pool: Pool, chain: str | None = None) -> list[ChainHead]:
    """Every chain's head (or one chain's) as the database records it."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT chain, seq, hash FROM audit_chains"
            " WHERE %(chain)s::text IS NULL OR chain = %(chain)s ORDER BY chain",
            {"chain": chain},
        )
        rows = await cursor.fetchall()
    return [ChainHead(chain=r["chain"], seq=r["seq"], hash=bytes(r["hash"]).hex()) for r in rows]


async def verify_chain(pool: Pool, head: ChainHead, anchors: Sequence[ChainHead]) -> ChainCheck:
    """Walk one chain from its first row; name the first row that breaks it.

    Every anchor is checked, not only the furthest: a chain rewritten and then anchored again
    still differs from the anchors taken before the rewrite.
    """
    furthest = max(anchors, key=lambda a: a.seq, default=None)
    check = ChainCheck(chain=head.chain, rows=0, head=head, anchor=furthest, anchors=len(anchors))
    by_seq: dict[int, list[ChainHead]] = {}
    for anchor in anchors:
        by_seq.setdefault(anchor.seq, []).append(anchor)
    previous = GENESIS
    async for row in chain_rows(pool, head.chain):
        check.rows += 1
        where = f"audit row {row.id} (chain {row.chain!r}, seq {row.seq})"
        if row.seq != check.rows:
            return _broken(check, row.id, f"{where}: expected seq {check.rows}; rows are missing")
        if bytes.fromhex(row.prev_hash) != previous:
            return _broken(check, row.id, f"{where}: its previous hash is not the row before's")
        computed = row_hash(previous, row)
        if computed.hex() != row.hash:
            return _broken(check, row.id, f"{where}: its fields do not match its hash (edited)")
        for anchor in by_seq.get(row.seq, []):
            if row.hash != anchor.hash:
                return _broken(
                    check,
                    row.id,
                    f"{where}: differs from the head anchored outside the database "
                    f"(anchored hash {anchor.hash[:16]}…): the chain was rewritten at or before it",
                )
        previous = computed
    if furthest is not None and furthest.seq > check.rows:
        return _broken(
            check,
            None,
            f"chain {head.chain!r} ends at seq {check.rows}, before its anchored head "
            f"(seq {furthest.seq}): rows were removed",
        )
    if check.rows != head.seq or previous.hex() != head.hash:
        return _broken(
            check,
            None,
            f"chain {head.chain!r}: its recorded head (seq {head.seq}) does not match its "
            f"last row (seq {check.rows}): rows were removed or the head was edited",
        )
    return check


async def verify(
    pool: Pool, anchors: Mapping[str, Sequence[ChainHead]], chain: str | None = None
) -> list[ChainCheck]:
    """Verify every chain the database knows (or one), and every anchored chain it lost."""
    known = {head.chain: head for head in await heads(pool, chain)}
    if chain is not None:
        anchors = {chain: anchors[chain]} if chain in anchors else {}
    checks = [await verify_chain(pool, head, anchors.get(name, [])) for name, head in known.items()]
    for name, anchored in anchors.items():
        if name not in known and anchored:
            furthest = max(anchored, key=lambda a: a.seq)
            checks.append(
                ChainCheck(
                    chain=name,
                    rows=0,
                    head=None,
                    anchor=furthest,
                    anchors=len(anchored),
                    problem=f"chain {name!r} was anchored at seq {furthest.seq} but the database "
                    "has no record of it: it was removed",
                )
            )
    return checks


def _broken(check: ChainCheck, row_id: int | None, problem: str) -> ChainCheck:
    return check.model_copy(update={"problem": problem, "broken_id": row_id})
