"""The audit log's hash chains: per tenant, verified in Python, anchored in Temporal's history."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from kernos import KernosClient, RunSpec, Settings
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.access import Decision, Subject
from kernos.kernel.audit import AttemptKey, AuditLog
from kernos.kernel.audit_anchor import Anchorer, Anchors, read_anchors
from kernos.kernel.audit_chain import (
    GENESIS,
    AnchoredHeads,
    AuditRow,
    ChainHead,
    chain_rows,
    row_hash,
    verify,
)
from kernos.kernel.config import DatabaseSettings
from kernos.kernel.db.migrate import available
from kernos.kernel.db.pool import open_pool
from kernos.kernel.run_store import RunStore
from kernos.kernel.syscalls import RunInput, RunOutcome
from tests.conftest import make_settings, new_database, workers
from tests.test_cli import config_file, kernos
from tests.waiting import eventually


def tenant_name() -> str:
    return f"audit-{uuid.uuid4().hex[:8]}"


async def run_steps(settings: Settings, client: KernosClient, tenant: str, steps: int) -> str:
    handle = await client.submit(RunSpec(agent="steps", task=str(steps), tenant=tenant))
    await handle.result()
    return handle.run_id


async def rows_of(client: KernosClient, tenant: str) -> list[AuditRow]:
    return [row async for row in chain_rows(client.pool, tenant)]


ANCHOR_KEY = "the kernel workers' anchor key"


def anchoring(temporal: TemporalDevServer, postgres: EmbeddedPostgres) -> Settings:
    """Settings whose kernel workers anchor the chains every 0.2 s, signed."""
    return make_settings(
        temporal, postgres, audit={"anchor_interval_s": 0.2, "anchor_key": ANCHOR_KEY}
    )


async def wait_anchored(
    client: KernosClient, settings: Settings, tenant: str, seq: int
) -> dict[str, list[ChainHead]]:
    """Every anchor of every chain, once the tenant's chain is anchored at `seq`.

    A signal that arrives while the anchor workflow's task is in flight enters its history when
    that task completes: poll until it is there.
    """

    def furthest(anchors: Anchors) -> int:
        return max((head.seq for head in anchors.chains.get(tenant, [])), default=0)

    anchors = await eventually(
        lambda: read_anchors(client.temporal, settings.audit.anchor_workflow_id, ANCHOR_KEY),
        lambda anchors: furthest(anchors) >= seq, what=f"chain {tenant} anchored at {seq}",
    )  # fmt: skip
    assert furthest(anchors) == seq
    assert anchors.ignored == []
    return anchors.chains


def as_superuser(postgres: EmbeddedPostgres, *statements: tuple[str, Any]) -> None:
    """What someone holding the database can do: switch the append-only trigger off and write."""
    with psycopg.connect(postgres.dsn(role="admin", database="kernos")) as conn:
        conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
        for sql, params in statements:
            conn.execute(sql, params)
        conn.execute("ALTER TABLE audit ENABLE TRIGGER audit_append_only")


def first_anchored_from(rows: list[AuditRow], heads: list[ChainHead], index: int) -> int:
    """The id of the first row from `rows[index]` on that an anchor covers: where a rewrite from
    there is caught (anchors are taken every 0.2 s, so a run may leave several)."""
    first = min(head.seq for head in heads if head.seq >= rows[index].seq)
    return next(row.id for row in rows if row.seq == first)


def rewrite_from(postgres: EmbeddedPostgres, rows: list[AuditRow], index: int, reason: str) -> None:
    """Change one row and recompute every hash after it, as a careful forger would."""
    forged = [row.model_copy() for row in rows]
    forged[index] = forged[index].model_copy(update={"reason": reason})
    previous = bytes.fromhex(forged[index].prev_hash)
    statements: list[tuple[str, Any]] = []
    for row in forged[index:]:
        digest = row_hash(previous, row)
        statements.append(
            (
                "UPDATE audit SET reason = %s, prev_hash = %s, hash = %s WHERE id = %s",
                (row.reason, previous, digest, row.id),
            )
        )
        previous = digest
    statements.append(
        ("UPDATE audit_chains SET hash = %s WHERE chain = %s", (previous, forged[0].chain))
    )
    as_superuser(postgres, *statements)


async def test_each_tenant_has_its_own_chain_and_an_edited_row_is_named(
    settings: Settings, kernos_client: KernosClient, postgres: EmbeddedPostgres
) -> None:
    acme, globex = tenant_name(), tenant_name()
    async with workers(settings):
        await run_steps(settings, kernos_client, acme, 3)
        await run_steps(settings, kernos_client, globex, 2)
        await run_steps(settings, kernos_client, acme, 1)
    acme_rows = await rows_of(kernos_client, acme)
    # Each run's syscalls, then its end (`run.end`, as Temporal has it).
    assert [row.seq for row in acme_rows] == [1, 2, 3, 4, 5, 6]
    assert bytes.fromhex(acme_rows[0].prev_hash) == GENESIS
    assert all(row.prev_hash == before.hash for before, row in itertools.pairwise(acme_rows))
    assert [row.seq for row in await rows_of(kernos_client, globex)] == [1, 2, 3]
    [check] = await verify(kernos_client.pool, {}, acme)
    assert (check.ok, check.rows, check.problem) == (True, 6, None)

    edited = acme_rows[1]
    as_superuser(postgres, ("UPDATE audit SET resource = 'llm:other' WHERE id = %s", (edited.id,)))
    [check] = await verify(kernos_client.pool, {}, acme)
    assert not check.ok
    assert check.broken_id == edited.id
    assert f"audit row {edited.id} (chain '{acme}', seq 2)" in (check.problem or "")
    assert "do not match its hash" in (check.problem or "")
    # The other tenant's chain is untouched by it.
    [other] = await verify(kernos_client.pool, {}, globex)
    assert other.ok


async def test_a_consistent_rewrite_or_a_cut_tail_is_caught_by_the_anchor(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = anchoring(temporal, postgres)
    tenant = tenant_name()
    async with workers(settings), await KernosClient.connect(settings) as client:
        await run_steps(settings, client, tenant, 4)  # four rows, and its end
        anchors = await wait_anchored(client, settings, tenant, 5)
        rows = await rows_of(client, tenant)
        assert anchors[tenant][-1].hash == rows[-1].hash

    async with await KernosClient.connect(settings) as client:
        rewrite_from(postgres, rows, 1, "nothing to see here")
        # Every hash is consistent again: the chain alone cannot tell...
        [alone] = await verify(client.pool, {}, tenant)
        assert alone.ok
        # ...the head anchored in Temporal can, and names the first row that differs from it.
        [anchored] = await verify(client.pool, anchors, tenant)
        assert not anchored.ok
        caught_at = first_anchored_from(rows, anchors[tenant], 1)
        assert anchored.broken_id == caught_at
        assert "anchored outside the database" in (anchored.problem or "")

    # The forger lets one more syscall append to the rewritten chain and waits for its anchor:
    # the newest anchor now matches the rewritten chain, the ones before it still do not.
    async with workers(settings), await KernosClient.connect(settings) as client:
        await run_steps(settings, client, tenant, 1)
        anchors = await wait_anchored(client, settings, tenant, 7)
        [anchored] = await verify(client.pool, anchors, tenant)
    assert anchors[tenant][-1].seq == 7 and len(anchors[tenant]) >= 2
    assert not anchored.ok
    assert anchored.broken_id == caught_at

    tenant = tenant_name()
    async with workers(settings), await KernosClient.connect(settings) as client:
        await run_steps(settings, client, tenant, 3)  # three rows, and its end
        anchorer = Anchorer(client.pool, client.temporal, settings)
        assert await anchorer.anchor_once()
        assert not await anchorer.anchor_once()  # nothing moved: nothing to send
        anchors = await wait_anchored(client, settings, tenant, 4)
        rows = await rows_of(client, tenant)
        as_superuser(
            postgres,
            ("DELETE FROM audit WHERE id = %s", (rows[-1].id,)),
            (
                "UPDATE audit_chains SET seq = 3, hash = %s WHERE chain = %s",
                (bytes.fromhex(rows[2].hash), tenant),
            ),
        )
        [alone] = await verify(client.pool, {}, tenant)
        assert alone.ok
        [anchored] = await verify(client.pool, anchors, tenant)
        assert "before its anchored head (seq 4): rows were removed" in (anchored.problem or "")


async def test_an_anchor_the_kernel_did_not_sign_is_ignored_and_reported(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = anchoring(temporal, postgres)
    tenant = tenant_name()
    async with workers(settings), await KernosClient.connect(settings) as client:
        await run_steps(settings, client, tenant, 2)
        await wait_anchored(client, settings, tenant, 3)
        # Anyone who reaches Temporal can signal the anchor workflow: a head no row has, for an
        # honest tenant's chain, unsigned and signed with another key.
        forged = AnchoredHeads(heads=[ChainHead(chain=tenant, seq=1, hash="00" * 32)])
        handle = client.temporal.get_workflow_handle(settings.audit.anchor_workflow_id)
        for signal in (forged, forged.signed("a guess")):
            await handle.signal("anchor", signal)
        anchors = await eventually(
            lambda: read_anchors(client.temporal, settings.audit.anchor_workflow_id, ANCHOR_KEY),
            lambda anchors: len(anchors.ignored) >= 2, what="both forged heads ignored",
        )  # fmt: skip
        [check] = await verify(client.pool, anchors.chains, tenant)
    assert check.ok  # the honest chain holds: the forged head was not taken
    assert all("not signed with the kernel's anchor key" in why for why in anchors.ignored)
    # `kernos audit verify` names each, and fails: someone is forging anchors.
    code, out, _ = await kernos(
        config_file(settings, tmp_path), "audit", "verify", "--tenant", tenant
    )
    assert code == 1
    assert f"chain '{tenant}': 3 rows, " in out and ": ok" in out
    assert out.count("IGNORED anchor signal") == 2


async def test_appends_to_one_chain_are_ordered_and_a_redelivery_appends_nothing(
    kernos_client: KernosClient,
) -> None:
    tenant = tenant_name()

    async def append(key: int) -> dict[str, Any]:
        async with kernos_client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT * FROM audit_append(%s, 'x', 'a', 1, 'r', %s, 'u', 'g',"
                " 'llm.chat', 'llm:m', 'allow', NULL, NULL, 'policy')",
                (f"wf-{tenant}-{key}", tenant),
            )
            row = await cursor.fetchone()
            assert row is not None
            return dict(row)

    written = await asyncio.gather(*(append(key) for key in range(40)))
    again = await append(7)
    assert again["id"] == next(row["id"] for row in written if row["workflow_id"].endswith("-7"))
    rows = await rows_of(kernos_client, tenant)
    assert sorted(row.seq for row in rows) == list(range(1, 41))
    [check] = await verify(kernos_client.pool, {}, tenant)
    assert (check.ok, check.rows) == (True, 40)


async def test_concurrent_decisions_of_a_tenant_are_committed_in_groups(
    kernos_client: KernosClient,
) -> None:
    tenant = tenant_name()
    live, done = f"run-{tenant}-live", f"run-{tenant}-done"
    runs = RunStore(kernos_client.pool)
    for run in (live, done):
        spec = RunSpec(agent="steps", task="1", tenant=tenant, model="m")
        await runs.admit(RunInput(run_id=run, spec=spec))
    await runs.finish(done, RunOutcome(status="completed"))
    audit = AuditLog(kernos_client.pool)
    allow = Decision(True, "p, u, llm:m, llm.chat", None, "policy")

    def decide(run: str, n: int, decision: Decision = allow) -> Any:
        subject = Subject(run_id=run, tenant=tenant, user="u", agent="g")
        key = AttemptKey(f"wf-{run}", "exec", str(n), 1)
        return audit.record_decision(key, subject, "llm.chat", "llm:m", decision)

    callers = [live] * 30 + [done] * 5 + [f"run-{tenant}-unknown"]
    decisions = await asyncio.gather(*(decide(run, n) for n, run in enumerate(callers)))
    assert all(d.allowed for d in decisions[:30])
    assert all(not d.allowed and d.basis == "finished" for d in decisions[30:35])
    assert (decisions[35].allowed, decisions[35].basis) == (False, "identity")
    assert audit.decision_statements < len(callers)  # grouped: one in flight, the rest waited
    # A redelivered attempt, alone or in a group, gets the decision its first delivery wrote.
    deny = Decision(False, None, "changed its mind", "policy")
    again = await asyncio.gather(*(decide(live, n, deny) for n in (3, 4, 5)))
    assert all(d.allowed for d in again)
    rows = await rows_of(kernos_client, tenant)
    assert sorted(row.seq for row in rows) == list(range(1, 36))
    [check] = await verify(kernos_client.pool, {}, tenant)
    assert (check.ok, check.rows) == (True, 35)
    await runs.finish(live, RunOutcome(status="completed"))


async def test_rows_written_before_the_chains_join_them(postgres: EmbeddedPostgres) -> None:
    database = postgres.dsn(role="owner", database=new_database(postgres))
    migrations = available()
    with psycopg.connect(database, row_factory=dict_row) as conn:
        for migration in migrations:
            if migration.version < 10:
                conn.execute(migration.sql.encode())
        for n, tenant in enumerate(["t1", None, "t1", "t2"]):
            conn.execute(
                "INSERT INTO audit (workflow_id, execution_run_id, activity_id, attempt, tenant,"
                " syscall, resource, decision, basis) VALUES (%s, 'x', '1', 1, %s, 'llm.chat',"
                " 'llm:m', 'allow', 'policy')",
                (f"wf{n}", tenant),
            )
        # The chains' migration, then every later one (the canonical text gained a version).
        for migration in migrations:
            if migration.version >= 10:
                conn.execute(migration.sql.encode())
        cursor = conn.execute("SELECT tenant, chain, seq FROM audit ORDER BY id")
        assert [tuple(row.values()) for row in cursor.fetchall()] == [
            ("t1", "t1", 1),
            (None, "", 1),
            ("t1", "t1", 2),
            ("t2", "t2", 1),
        ]
    pool = await open_pool(DatabaseSettings(dsn=database))
    try:
        checks = await verify(pool, {})
    finally:
        await pool.close()
    assert sorted((check.chain, check.rows, check.ok) for check in checks) == [
        ("", 1, True),
        ("t1", 2, True),
        ("t2", 1, True),
    ]


async def test_audit_cli_lists_exports_and_verifies(
    settings: Settings, tmp_path: Path, postgres: EmbeddedPostgres
) -> None:
    config = config_file(settings, tmp_path)
    good, bad = tenant_name(), tenant_name()
    async with workers(settings), await KernosClient.connect(settings) as client:
        run_id = await run_steps(settings, client, good, 2)
        await run_steps(settings, client, bad, 2)
        [first_bad, _, _] = await rows_of(client, bad)

    code, out, err = await kernos(config, "audit", "--tenant", good, "--json")
    assert code == 0, err
    exported = [json.loads(line) for line in out.splitlines()]
    assert [(row["run_id"], row["syscall"], row["seq"]) for row in exported] == [
        (run_id, "llm.chat", 1),
        (run_id, "llm.chat", 2),
        (run_id, "run.end", 3),
    ]
    assert exported[1]["prev_hash"] == exported[0]["hash"]
    code, out, _ = await kernos(config, "audit", "--run", run_id, "--last", "1")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(exported[2]["id"])]

    as_superuser(postgres, ("UPDATE audit SET decision = 'deny' WHERE id = %s", (first_bad.id,)))
    code, out, _ = await kernos(config, "audit", "verify", "--tenant", good)
    assert (code, out.strip()) == (0, f"chain '{good}': 3 rows: ok")
    code, out, _ = await kernos(config, "audit", "verify", "--tenant", bad, "--json")
    report = json.loads(out)
    assert code == 1
    assert report["ok"] is False
    assert report["chains"][0]["broken_id"] == first_bad.id
    code, _, err = await kernos(config, "audit", "--since", "yesterday")
    assert code == 2 and "'yesterday' is not an ISO 8601 time" in err
