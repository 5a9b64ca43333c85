"""Policies in PostgreSQL: edited with `kernos policy`, followed by running workers at once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.access import AccessManager, Subject
from kernos.kernel.db import upgrade
from tests import tools as test_tools
from tests.conftest import make_settings, new_database, workers
from tests.test_cli import config_file, kernos
from tests.waiting import eventually

DEFAULT_POLICY = Path(__file__).parents[1] / "policies" / "policy.csv"


async def until_decided(access: AccessManager, allowed: bool, tenant: str) -> None:
    subject = Subject("r", tenant, "operator", "memo")
    await eventually(
        lambda: access.decide(subject, "tool.call", "tool:charge").allowed == allowed,
        what="the worker's rules reloaded", timeout_s=15, every_s=0.05,
    )  # fmt: skip


async def test_rules_in_the_database_are_edited_live_and_only_by_editors(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"live-{uuid.uuid4().hex[:8]}"
    database = new_database(postgres)  # the rules table is the database's, not the tenant's
    await upgrade(postgres.dsn(role="owner", database=database))
    settings = make_settings(
        temporal, postgres,
        database={
            "dsn": postgres.dsn(database=database),
            "operator_dsn": postgres.dsn(role="operator", database=database),
        },
        policy={"store": "database"},
        tools={"registry": {"charge": "tests.tools:charge"}},
    )  # fmt: skip
    config = config_file(settings, tmp_path)
    code, out, err = await kernos(config, "policy", "import", str(DEFAULT_POLICY))
    assert code == 0, err
    assert out.startswith("imported ") and "(0 were there)" in out
    code, out, _ = await kernos(config, "policy", "list", "--json")
    listed = json.loads(out)
    assert {"type": "p", "fields": ["*", "*", "*", "llm:*", "llm.*", "allow"]} in listed
    code, out, _ = await kernos(config, "policy", "test", "ann", "memo", tenant, "tool:charge",
                                "tool.call")  # fmt: skip
    assert (code, out.strip()) == (1, f"deny: tool.call on tool:charge denied for user 'ann' "
                                      f"running agent 'memo' in tenant '{tenant}' (no rule "
                                      "allows it)")  # fmt: skip
    rule = ["p", "*", "*", tenant, "tool:charge", "tool.call", "allow"]
    step = [{"op": "tools.call", "tool": "charge", "account": "a", "cents": 1}]

    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        assert group.kernel is not None
        access = group.kernel.kernel.access
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(step), tenant=tenant))
        [refused] = json.loads((await handle.result()).output)
        assert refused["error"] == "AccessDenied"

        code, _, err = await kernos(config, "policy", "add", *rule, "--user", "mallory")
        assert code == 1 and f"'mallory' may not edit rules of tenant '{tenant}'" in err
        code, out, err = await kernos(config, "policy", "add", *rule)
        assert (code, out.strip()) == (0, f"added: {', '.join(rule)}"), err
        await until_decided(access, True, tenant)  # no restart: the worker heard NOTIFY
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(step), tenant=tenant))
        [charged] = json.loads((await handle.result()).output)
        assert charged["content"] == "charged 1 to a"

        code, out, _ = await kernos(config, "policy", "remove", *rule)
        assert code == 0
        await until_decided(access, False, tenant)
        code, out, _ = await kernos(config, "policy", "remove", *rule)
        assert (code, out.strip()) == (1, f"no such rule: {', '.join(rule)}")
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT user_name, decision FROM audit WHERE syscall = 'policy.edit' ORDER BY id"
            )
            edits = [tuple(row.values()) for row in await cursor.fetchall()]
    assert edits == [
        ("operator", "allow"),  # the import
        ("mallory", "deny"),
        ("operator", "allow"),
        ("operator", "allow"),
        ("operator", "allow"),
    ]
    assert len((test_tools.EFFECTS / tenant).read_text().splitlines()) == 1


async def test_a_file_store_refuses_edits_by_name(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    config = config_file(make_settings(temporal, postgres), tmp_path)
    code, _, err = await kernos(config, "policy", "add", "p", "*", "*", "*", "x:*", "y", "allow")
    assert code == 1 and 'set [policy] store = "database"' in err
    code, _, err = await kernos(config, "policy", "test", "u", "a", "t", "llm:m", "llm.chat")
    assert code == 0
