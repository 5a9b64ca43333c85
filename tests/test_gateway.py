"""The HTTP gateway: a client with only an API key and a URL submits and follows its runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from kernos import AccessDenied, KernosClient, RunSpec
from kernos.client import RunFailed
from kernos.gateway import gateway_app
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.api_keys import ApiKeyStore, AuthenticationFailed
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
    server = uvicorn.Server(
        uvicorn.Config(gateway_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


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
    policy = tmp_path / "policy.csv"
    policy.write_text(DEFAULT_POLICY)
    settings = make_settings(temporal, postgres, policy={"policy_path": str(policy)})
    async with (
        workers(settings),
        gateway(settings) as url,
        await KernosClient.connect(settings) as operator,
    ):
        store = ApiKeyStore(operator.pool)
        _, bob = await store.create(user="bob", tenant=home, created_by="test")
        _, carol = await store.create(user="carol", tenant=home, created_by="test")
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
                f"{DEFAULT_POLICY}p, bob, *, {other}, tenant:{other}, run.submit, allow\n"
            )
            abroad = await remote.submit({"agent": "echo", "task": "hi", "tenant": other})
            await remote.result(abroad, timeout_s=60)
            assert (await remote.get(abroad)).tenant == other
            admitted = await run_count(operator)

        # Another user of the same tenant sees nothing of bob's runs.
        async with RemoteClient(url, carol) as remote:
            with pytest.raises(RunNotFound):
                await remote.get(run_id)
            with pytest.raises(RunNotFound):
                await remote.cancel(run_id)

        # No key, a forged one, a revoked one: 401, one message, nothing admitted.
        async with httpx.AsyncClient(base_url=url) as anonymous:
            answer = await anonymous.post("/v1/runs", json={"agent": "echo", "task": "x"})
            assert answer.status_code == 401
            assert "API key" in answer.json()["error"]["message"]
        await store.revoke(bob.split("_")[1])
        for token in (bob, "kn_0123456789ab_" + "A" * 43):
            async with RemoteClient(url, token) as remote:
                with pytest.raises(AuthenticationFailed):
                    await remote.submit({"agent": "echo", "task": "x"})
        assert await run_count(operator) == admitted


async def test_a_run_is_cancelled_through_the_gateway(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    async with (
        workers(settings),
        gateway(settings) as url,
        await KernosClient.connect(settings) as operator,
    ):
        _, token = await ApiKeyStore(operator.pool).create(
            user="dan", tenant="t-cancel", created_by="test"
        )
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
