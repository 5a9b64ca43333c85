"""The HTTP gateway: a client with only an API key and a URL submits and follows its runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kernos import AccessDenied, KernosClient, RunSpec
from kernos.client import RunFailed
from kernos.gateway import gateway_config
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.api_keys import ApiKeyStore, AuthenticationFailed
from kernos.kernel.audit_chain import verify
from kernos.kernel.config import Settings
from kernos.kernel.errors import InvalidRequest, RunNotFound
from kernos.remote import RemoteClient
from tests.conftest import make_settings, workers
from tests.test_cli import assert_one_line_error, kernos

DEFAULT_POLICY = (Path(__file__).parents[1] / "policies" / "policy.csv").read_text()


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[str]:
    """The gateway served by uvicorn on a free port, as `kernos gateway` serves it."""
    port = free_port()
    server = uvicorn.Server(gateway_config(settings, "127.0.0.1", port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
        await asyncio.sleep(0.02)
    scheme = "https" if settings.gateway.tls_cert is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@asynccontextmanager
async def kernel_and_gateway(settings: Settings) -> AsyncIterator[tuple[str, KernosClient]]:
    """Workers, the gateway and the operator's client: the gateway's URL and the client."""
    async with (
        workers(settings),
        gateway(settings) as url,
        await KernosClient.connect(settings) as operator,
    ):
        yield url, operator


def with_policy(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    rules: str = "",
    **overrides: Any,
) -> tuple[Settings, Path]:
    """Settings whose policy is the default plus `rules`, in a file the test may rewrite."""
    policy = tmp_path / "policy.csv"
    policy.write_text(DEFAULT_POLICY + rules)
    return make_settings(
        temporal, postgres, policy={"policy_path": str(policy)}, **overrides
    ), policy


async def run_count(client: KernosClient) -> int:
    async with client.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) AS n FROM runs")
        row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def test_a_key_holder_submits_and_follows_runs_through_the_gateway(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    home, other = f"home-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    settings, policy = with_policy(temporal, postgres, tmp_path)
    async with kernel_and_gateway(settings) as (url, operator):
        _, bob = await operator.create_key(user="bob", tenant=home)
        _, carol = await operator.create_key(user="carol", tenant=home)
        async with RemoteClient(url, bob) as remote:
            run_id = await remote.submit(RunSpec(agent="echo", task="hi"))
            result = await remote.result(run_id, timeout_s=60)
            assert result.run_id == run_id and result.syscalls == 1
            seen = await remote.get(run_id)
            assert (seen.tenant, seen.user, seen.status) == (home, "bob", "completed")
            # The kernel's record says who submitted: the key's user, in its tenant.
            record = (await operator.show(run_id)).record
            assert (record.tenant, record.user) == (home, "bob")

            failing = await remote.submit({"agent": "buggy", "task": "x"})
            with pytest.raises(RunFailed) as failed:
                await remote.result(failing, timeout_s=60)
            assert failed.value.run_id == failing

            before = await run_count(operator)
            with pytest.raises(AccessDenied, match="cannot submit as 'alice'"):
                await remote.submit({"agent": "echo", "task": "hi", "user": "alice"})
            with pytest.raises(AccessDenied, match=f"may not submit runs in tenant '{other}'"):
                await remote.submit({"agent": "echo", "task": "hi", "tenant": other})
            with pytest.raises(InvalidRequest, match="UnknownAgent"):
                await remote.submit({"agent": "nobody", "task": "hi"})
            with pytest.raises(InvalidRequest, match="task"):
                await remote.submit({"agent": "echo"})
            huge = "x" * (settings.max_task_bytes * 3)
            with pytest.raises(InvalidRequest, match="PayloadTooLarge"):
                await remote.submit({"agent": "echo", "task": huge})
            assert await run_count(operator) == before  # nothing admitted

            # With a rule, bob submits in the other tenant, and sees that run of his too.
            policy.write_text(
                f"{DEFAULT_POLICY}p, {home}/bob, *, {other}, tenant:{other}, run.submit, allow\n"
            )
            abroad = await remote.submit({"agent": "echo", "task": "hi", "tenant": other})
            await remote.result(abroad, timeout_s=60)
            # Abroad, bob is named by his home tenant, in the record as in policy and audit.
            assert (await remote.get(abroad)).user == f"{home}/bob"
            assert (await remote.get(abroad)).tenant == other
            admitted = await run_count(operator)

        # Another user of the same tenant sees nothing of bob's runs.
        async with RemoteClient(url, carol) as remote:
            with pytest.raises(RunNotFound):
                await remote.get(run_id)
            with pytest.raises(RunNotFound):
                await remote.cancel(run_id)

        await operator.revoke_key(bob.split("_")[1])
        for token in (bob, "kn_0123456789ab_" + "A" * 43):
            async with RemoteClient(url, token) as remote:
                with pytest.raises(AuthenticationFailed):
                    await remote.submit({"agent": "echo", "task": "x"})
        assert await run_count(operator) == admitted


async def test_a_run_is_cancelled_through_the_gateway(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    async with kernel_and_gateway(settings) as (url, operator):
        _, token = await operator.create_key(user="dan", tenant="t-cancel")
        async with RemoteClient(url, token) as remote:
            run_id = await remote.submit({"agent": "pausing", "task": "30"})
            with pytest.raises(TimeoutError):
                await remote.result(run_id, timeout_s=0.5)
            await remote.cancel(run_id)
            with pytest.raises(RunFailed, match=r"[Cc]ancel"):
                await remote.result(run_id, timeout_s=30)


async def test_the_cli_through_the_gateway_names_what_is_missing(tmp_path: Path) -> None:
    """No key, or no gateway at the address: one line naming it, nothing else contacted."""
    config = tmp_path / "kernos.toml"
    config.write_text("")  # a client's machine: no settings
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await kernos(config, "run", "echo", "hi", "--gateway", url)
    assert_one_line_error(code, err, "--gateway needs an API key")
    code, _, err = await kernos(config, "run", "echo", "hi", "--gateway", url, "--api-key", "kn_x")
    assert_one_line_error(code, err, f"cannot reach the gateway at {url}")


async def post(url: str, token: str | None, body: bytes | dict[str, object]) -> httpx.Response:
    """A raw POST /v1/runs, as any HTTP client could send it."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if token == "Basic":
        headers = {"Authorization": "Basic bWFsbG9yeTpzZWNyZXQ="}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        if isinstance(body, bytes):
            return await http.post("/v1/runs", content=body)
        return await http.post("/v1/runs", json=body)


async def audit_of(
    client: KernosClient, tenant: str, *, keys: bool = True
) -> list[dict[str, object]]:
    """The operator's and clients' rows of a tenant's chain (without `keys.*`, if not `keys`).

    Not the kernel's records of how its runs ended (`run.end`), which come as each end is learned.
    """
    async with client.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT syscall, resource, decision, user_name, key_id, reason, run_id FROM audit"
            " WHERE tenant = %s AND execution_run_id = 'operator' AND syscall <> 'run.end'"
            " AND (%s OR syscall NOT LIKE 'keys.%%') ORDER BY id",
            (tenant, keys),
        )
        return list(await cursor.fetchall())


async def test_key_holders_get_the_priority_policy_allows_and_are_audited_by_key(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"prio-{uuid.uuid4().hex[:6]}"
    settings, policy = with_policy(
        temporal, postgres, tmp_path, scheduler={"tenant_priorities": {tenant: 4}}
    )
    async with kernel_and_gateway(settings) as (url, operator):
        key, token = await operator.create_key(user="eve", tenant=tenant)
        async with RemoteClient(url, token) as remote:
            before = await run_count(operator)
            # Any key could ask for priority 1: now only a rule lets it above the default.
            with pytest.raises(
                AccessDenied,
                match=rf"'eve' \(API key {key.id}\) may not submit at priority 1 \(the default "
                rf"in tenant '{tenant}' is 4\): no rule allows run.submit on priority:1",
            ):
                await remote.submit({"agent": "echo", "task": "x", "priority": 1})
            # Nor may it escape its tenant's priority by another policy (fifo carries none).
            with pytest.raises(
                AccessDenied,
                match=r"may not choose scheduling policy 'fifo' \(the kernel's is 'priority'\):"
                r" no rule allows run.submit on policy:fifo",
            ):
                await remote.submit({"agent": "echo", "task": "x", "policy": "fifo"})
            assert await run_count(operator) == before
            default = await remote.submit({"agent": "echo", "task": "x"})
            lower = await remote.submit({"agent": "echo", "task": "x", "priority": 5})
            policy.write_text(
                f"{DEFAULT_POLICY}p, eve, *, {tenant}, priority:2, run.submit, allow\n"
            )
            raised = await remote.submit({"agent": "echo", "task": "x", "priority": 2})
            cancelled = await remote.submit({"agent": "pausing", "task": "30"})
            await remote.cancel(cancelled)
            for run_id in (default, lower, raised):
                await remote.result(run_id, timeout_s=60)
        priorities = [(await operator.show(r)).record.priority for r in (default, lower, raised)]
        assert priorities == [4, 5, 2]
        rows = await audit_of(operator, tenant)
        checks = await verify(operator.pool, {}, chain=tenant)
        async with operator.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM audit WHERE tenant = %s", (tenant,)
            )
            chained = (await cursor.fetchone() or {})["n"]
    # The key's making (by the operator), then every gateway request that changed something
    # is in the tenant's chain, naming the key.
    assert [(r["syscall"], r["decision"], r["key_id"]) for r in rows] == [
        ("keys.create", "allow", None),
        ("run.submit", "deny", key.id),
        ("run.submit", "deny", key.id),
        ("run.submit", "allow", key.id),
        ("run.submit", "allow", key.id),
        ("run.submit", "allow", key.id),
        ("run.submit", "allow", key.id),
        ("run.cancel", "allow", key.id),
    ]
    assert [r["run_id"] for r in rows] == [
        None, None, None, default, lower, raised, cancelled, cancelled
    ]  # fmt: skip
    assert "may not submit at priority 1" in str(rows[1]["reason"])
    # Rows that name a key hash under the canonical text's version 2, checked independently,
    # among the runs' own rows in the same chain.
    assert chained > len(rows)
    assert [(check.ok, check.rows) for check in checks] == [(True, chained)], checks


async def test_a_user_name_is_not_a_subject_in_every_tenant(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    unique = uuid.uuid4().hex[:6]
    acme, partner, evil = f"acme-{unique}", f"partner-{unique}", f"evil-{unique}"
    # Tenant acme let its partner's carol in with a rule naming `carol` (the finding: any
    # tenant's carol matched it, submitted into acme, read the runs and wrote the files). Now a
    # plain name is acme's own carol, and the partner's is named by her tenant.
    rules = (
        f"p, carol, *, {acme}, tenant:{acme}, run.submit, allow\n"
        f"p, {partner}/carol, *, {acme}, tenant:{acme}, run.submit, allow\n"
    )
    settings, _ = with_policy(temporal, postgres, tmp_path, rules)
    task = {"agent": "memo", "task": '[{"op": "storage.write", "path": "p.md", "content": "x"}]'}
    async with kernel_and_gateway(settings) as (url, operator):
        tokens = {
            home: (await operator.create_key(user="carol", tenant=home))[1]
            for home in (acme, partner, evil)
        }
        runs = {}
        for home in (acme, partner):
            async with RemoteClient(url, tokens[home]) as remote:
                runs[home] = await remote.submit({**task, "tenant": acme})
                await remote.result(runs[home], timeout_s=60)
        before = await run_count(operator)
        async with RemoteClient(url, tokens[evil]) as remote:
            # Evil's carol is neither acme's nor partner's: she may not submit into acme...
            with pytest.raises(AccessDenied, match=f"'{evil}/carol' .* may not submit runs in"):
                await remote.submit({**task, "tenant": acme})
            # ...nor see, follow or cancel either carol's run there.
            for run_id in runs.values():
                for call in (remote.get, remote.cancel):
                    with pytest.raises(RunNotFound):
                        await call(run_id)
        assert await run_count(operator) == before
        users = [(await operator.show(run_id)).record.user for run_id in runs.values()]
        in_acme = await audit_of(operator, acme, keys=False)
        in_evil = await audit_of(operator, evil, keys=False)
    assert users == ["carol", f"{partner}/carol"]
    assert [(r["user_name"], r["decision"]) for r in in_acme] == [
        ("carol", "allow"),
        (f"{partner}/carol", "allow"),
    ]
    # The refusal is evil's own: in its chain, not grown into acme's.
    assert [(r["user_name"], r["decision"], r["resource"]) for r in in_evil] == [
        ("carol", "deny", f"tenant:{acme}")
    ]


async def test_the_gateway_refuses_bad_bodies_and_keys_alike(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    async with gateway(settings) as url, await KernosClient.connect(settings) as operator:
        key, token = await operator.create_key(user="mallory", tenant="t-bodies")
        revoked, revoked_token = await operator.create_key(user="m2", tenant="t-bodies")
        await operator.revoke_key(revoked.id)
        before = await run_count(operator)
        # Every failed authentication gets the same answer, and writes nothing.
        _, key_id, secret = token.split("_", 2)
        wrong = f"kn_{key_id}_{'A' * 43 if secret != 'A' * 43 else 'B' * 43}"
        answers = []
        for attempt in (None, "Basic", "kn_nonsense", "kn_0123456789ab_" + "A" * 43, wrong,
                        revoked_token):  # fmt: skip
            answer = await post(url, attempt, {"agent": "echo", "task": "x"})
            answers.append((answer.status_code, answer.json()))
        assert len(set(map(str, answers))) == 1, answers
        assert answers[0][0] == 401
        keys = {k.id: k for k in await ApiKeyStore(operator.pool).listing("t-bodies")}
        assert keys[key.id].last_used_at is None  # a wrong secret left no trace
        assert keys[revoked.id].last_used_at is None
        # 200 KB of nesting was a 500 (RecursionError); now a 400 naming the limit, at any depth.
        for body in (b"[" * 200_000, b'{"agent": ' + b"[" * 40 + b"]" * 40 + b', "task": "x"}'):
            answer = await post(url, token, body)
            assert answer.status_code == 400, answer.text
            assert "more than 32 deep (the gateway's limit" in answer.json()["error"]["message"]
        # Brackets inside strings are text, not nesting.
        answer = await post(url, token, {"agent": "nobody", "task": "[" * 1000})
        assert answer.json()["error"]["type"] == "UnknownAgent"
        keys = {k.id: k for k in await ApiKeyStore(operator.pool).listing("t-bodies")}
        assert keys[key.id].last_used_at is not None  # the right one is recorded
        assert await run_count(operator) == before
