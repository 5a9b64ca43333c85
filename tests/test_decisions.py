"""Decisions over the record need a principal the kernel's workers do not have.

Tried as whoever holds the kernel's DSN (a leaked `kernel.toml`, a compromised worker) would:
an approval, a budget, a rule or an API key changes only with the operator's role or, for an
approval, the approver's API key, which the database checks against its hash. An approval row
set to approved by any other means (here: by hand, with the owner's role) lets nothing through.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from kernos import AccessDenied, KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.access import Subject
from kernos.kernel.approvals import ApprovalStore
from kernos.kernel.errors import ConfigError
from kernos.kernel.syscalls import ApprovalNotice
from tests import tools as test_tools
from tests.test_approvals import (
    approval_settings,
    audited,
    charge,
    pending_of,
    workers_and_client,
)
from tests.test_cli import assert_one_line_error, config_file, kernos


async def test_the_kernels_dsn_alone_decides_no_approval(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"forge-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    async with workers_and_client(settings) as operator:
        handle = await operator.submit(
            RunSpec(agent="memo", task=json.dumps([charge(500), charge(7)]), tenant=tenant)
        )
        forged = await pending_of(operator, handle.run_id)
        _, alices_key = await operator.create_key(user="alice", tenant=tenant)
        wrong_key = alices_key[:-4] + ("AAAA" if not alices_key.endswith("AAAA") else "BBBB")
        with psycopg.connect(postgres.dsn()) as kernel:
            # No proof at all, a guessed key, and the chain row the gate asks for.
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="approver's proof"):
                kernel.execute(
                    "SELECT approval_decide(%s, true, 'forged', 'p, alice', 'alice', NULL)",
                    (forged.id,),
                )
            kernel.rollback()
            with pytest.raises(psycopg.errors.InvalidPassword, match="authentication failed"):
                kernel.execute(
                    "SELECT approval_decide(%s, true, 'forged', 'p, alice', 'alice', %s)",
                    (forged.id, wrong_key),
                )
            kernel.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="appends no allowed"):
                kernel.execute(
                    "SELECT audit_append(%s, 'operator', %s, 1, %s, %s, 'alice', 'memo',"
                    " 'approval.decide', 'tool:charge', 'allow', NULL, 'forged', 'policy')",
                    (
                        handle.run_id, f"approval.decide/{forged.id}/approved", handle.run_id,
                        tenant,
                    ),
                )  # fmt: skip
            kernel.rollback()
        # A role that can write the table (the owner's, by hand) marks it approved, and any
        # Temporal client wakes the run.
        with psycopg.connect(postgres.dsn(role="owner"), autocommit=True) as owner:
            owner.execute(
                "UPDATE approvals SET status = 'approved', decided_by = 'alice',"
                " decided_at = now() WHERE id = %s",
                (forged.id,),
            )
        await operator.temporal.get_workflow_handle(handle.run_id).execute_update(
            "approval", ApprovalNotice(approval_id=forged.id, status="approved")
        )
        # The second charge asks anew; alice decides it with her key, and only her key: this
        # client has the kernel's DSN and no operator's credential.
        second = (await pending_of(operator, handle.run_id)).id  # forged's is no longer pending
        keyed_settings = settings.model_copy(
            update={"database": settings.database.model_copy(update={"operator_dsn": None})}
        )
        async with await KernosClient.connect(keyed_settings, api_key=alices_key) as alice:
            decided = await alice.approve(handle.run_id, user="alice", approval_id=second)
        assert decided.approval.status == "approved"
        first, then = json.loads((await handle.result()).output)
        rows = await audited(operator, handle.run_id)
        async with operator.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT reason FROM audit WHERE run_id = %s AND syscall = 'tool.call'"
                " AND decision = 'deny' ORDER BY id",
                (handle.run_id,),
            )
            refusals = [row["reason"] for row in await cursor.fetchall()]
            cursor = await conn.execute(
                "SELECT key_id FROM audit WHERE run_id = %s AND syscall = 'approval.decide'",
                (handle.run_id,),
            )
            decision_keys = [row["key_id"] for row in await cursor.fetchall()]

    assert first["error"] == "AccessDenied"
    assert "lets nothing through" in first["message"]
    assert ["lets nothing through" in str(reason) for reason in refusals] == [False, True, False]
    assert then["content"] == "charged 7 to acme"
    # Only the approved charge happened.
    assert [line.split()[1] for line in (test_tools.EFFECTS / tenant).read_text().splitlines()] == [
        "7"
    ]
    assert rows == [
        ("tool.call", "deny", "approval", "operator"),  # waiting
        ("tool.call", "deny", "approval", "operator"),  # the forged row: refused
        ("tool.call", "deny", "approval", "operator"),  # the second charge waiting
        ("approval.decide", "allow", "policy", "alice"),
        ("tool.call", "allow", "approval", "operator"),
        ("run.end", "allow", "policy", "operator"),
    ]
    assert decision_keys == [alices_key.split("_")[1]]


async def test_a_key_decides_only_as_its_own_user(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"keyed-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    async with workers_and_client(settings) as operator:
        handle = await operator.submit(
            RunSpec(agent="memo", task=json.dumps([charge(1)]), tenant=tenant)
        )
        waiting = await pending_of(operator, handle.run_id)
        _, mallorys_key = await operator.create_key(user="mallory", tenant=tenant)
        _, revoked_key = await operator.create_key(user="alice", tenant=tenant)
        await operator.revoke_key(revoked_key.split("_")[1])
        _, foreign_key = await operator.create_key(user="alice", tenant=f"{tenant}-other")
        with psycopg.connect(postgres.dsn()) as kernel:
            # Another tenant's key, whatever user it names, decides nothing here.
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="decides no approval"):
                kernel.execute(
                    "SELECT approval_decide(%s, true, NULL, 'p, alice', %s, %s)",
                    (waiting.id, f"{tenant}-other/alice", foreign_key),
                )
            kernel.rollback()
            # Mallory's key is mallory's, whatever the call names (and policy lets her not).
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="cannot decide as"):
                kernel.execute(
                    "SELECT approval_decide(%s, true, NULL, 'p, alice', 'alice', %s)",
                    (waiting.id, mallorys_key),
                )
            kernel.rollback()
            with pytest.raises(psycopg.errors.InvalidPassword):
                kernel.execute(
                    "SELECT approval_decide(%s, true, NULL, 'p, alice', 'alice', %s)",
                    (waiting.id, revoked_key),
                )
            kernel.rollback()
        assert (await pending_of(operator, handle.run_id)).status == "pending"
        # From the CLI, with no operator's credential: without a key nothing is decided; with
        # alice's, alice decides.
        _, alices_key = await operator.create_key(user="alice", tenant=tenant)
        config = config_file(settings, tmp_path, database=settings.database.model_copy(
            update={"operator_dsn": None}
        ))  # fmt: skip
        code, _, err = await kernos(config, "approve", handle.run_id, "--user", "alice")
        assert_one_line_error(code, err, "set [database] operator_dsn")
        code, out, err = await kernos(
            config, "approve", handle.run_id, "--deny", "--reason", "no", "--api-key", alices_key
        )
        assert code == 0, err
        assert out.startswith("denied tool.call on tool:charge")
        [result] = json.loads((await handle.result()).output)
    assert "denied by 'alice'" in result["message"]


async def test_the_kernels_dsn_sets_no_budget_and_makes_no_key(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"ops-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    kernel_only = settings.model_copy(
        update={"database": settings.database.model_copy(update={"operator_dsn": None})}
    )
    async with await KernosClient.connect(kernel_only) as client:
        with pytest.raises(ConfigError, match=r"are the operator's: set \[database\] operator_dsn"):
            await client.set_budget(tenant, 10)
        with pytest.raises(ConfigError, match="operator_dsn"):
            await client.create_key(user="eve", tenant=tenant)
    async with await KernosClient.connect(settings) as operator:
        _, token = await operator.create_key(user="eve", tenant=tenant)
        async with await KernosClient.connect(settings, api_key=token) as eve:
            with pytest.raises(AccessDenied, match="setting a budget is the operator's"):
                await eve.set_budget(tenant, 10)
            with pytest.raises(AccessDenied, match="making an API key is the operator's"):
                await eve.create_key(user="eve2", tenant=tenant)
        assert await operator.usage(tenant) == []

    config = config_file(kernel_only, tmp_path)
    for command in (
        ("budget", "set", tenant, "10"),
        ("keys", "create", "--user", "eve", "--tenant", tenant),
        ("keys", "revoke", token.split("_")[1]),
    ):
        code, _, err = await kernos(config, *command)
        assert_one_line_error(code, err, "set [database] operator_dsn")
    # With the operator's credential they work, and the chain holds each.
    config = config_file(settings, tmp_path)
    code, _, err = await kernos(config, "budget", "set", tenant, "10")
    assert code == 0, err
    code, _, err = await kernos(config, "keys", "revoke", token.split("_")[1])
    assert code == 0, err
    async with await KernosClient.connect(settings) as operator, operator.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT syscall FROM audit WHERE tenant = %s ORDER BY id", (tenant,)
        )
        assert [row["syscall"] for row in await cursor.fetchall()] == [
            "keys.create", "budget.set", "keys.revoke",
        ]  # fmt: skip


async def test_an_approval_shows_the_request_that_goes_through(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The kernel's role records a request for approval showing a harmless request under the
    digest of a harmful one; the human approves what they see; the harmful one is refused."""
    tenant = f"shown-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    harmful = {"name": "charge", "arguments": json.dumps({"cents": 1_000_000}), "call_id": ""}
    shown = {"name": "charge", "arguments": json.dumps({"cents": 1}), "call_id": ""}
    digest = hashlib.sha256(
        f"tool.call\x1ftool:charge\x1f{json.dumps(harmful, sort_keys=True, separators=(',', ':'))}"
        .encode()
    ).digest()  # fmt: skip
    async with workers_and_client(settings) as operator:
        handle = await operator.submit(
            RunSpec(agent="pausing", task="30", tenant=tenant)
        )  # a live run to ask in the name of
        forged_id = str(uuid.uuid4())
        with psycopg.connect(postgres.dsn(), autocommit=True) as kernel:
            kernel.execute(
                "SELECT approval_request(%s, %s, 'tool.call', 'tool:charge', %s, %s, 'a', 60)",
                (forged_id, handle.run_id, Jsonb(shown), digest),
            )
        await operator.approve(handle.run_id, user="alice", approval_id=forged_id)
        record = (await operator.show(handle.run_id)).record
        gate = await ApprovalStore(operator.pool).gate(
            key="attempt-1",
            subject=Subject(handle.run_id, tenant, record.user, record.agent),
            syscall="tool.call",
            resource="tool:charge",
            request=harmful,
            rule="a",
            timeout_s=60,
        )
        await handle.cancel()
    assert gate.state == "forged"
    assert "shows another request" in gate.explain()
