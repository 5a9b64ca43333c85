"""API keys: a client is the key's user in the key's tenant, and nothing it claims."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kernos import AccessDenied, KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.api_keys import ApiKeyStore, AuthenticationFailed
from kernos.kernel.errors import InvalidRequest
from tests.conftest import make_settings, workers
from tests.test_cli import assert_one_line_error, config_file, kernos

DEFAULT_POLICY = (Path(__file__).parents[1] / "policies" / "policy.csv").read_text()


async def test_a_key_is_its_user_in_its_tenant(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    home, other = f"home-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    policy = tmp_path / "policy.csv"
    policy.write_text(DEFAULT_POLICY)
    settings = make_settings(temporal, postgres, policy={"policy_path": str(policy)})
    config = config_file(settings, tmp_path)
    code, out, err = await kernos(config, "keys", "create", "--user", "bob", "--tenant", home)
    assert code == 0, err
    token = out.strip()
    assert token.startswith("kn_") and "shown once" in err

    async with workers(settings):
        async with await KernosClient.connect(settings, api_key=token) as client:
            assert client.principal is not None and client.principal.user == "bob"
            handle = await client.submit(RunSpec(agent="echo", task="hi"))
            await handle.result()
            record = (await client.show(handle.run_id)).record
            assert (record.tenant, record.user) == (home, "bob")
            with pytest.raises(AccessDenied, match="cannot submit as 'alice'"):
                await client.submit(RunSpec(agent="echo", task="hi", user="alice"))
            with pytest.raises(AccessDenied, match=f"may not submit runs in tenant '{other}'"):
                await client.submit(RunSpec(agent="echo", task="hi", tenant=other))
        # Acting for another tenant is itself a rule.
        policy.write_text(
            f"{DEFAULT_POLICY}p, {home}/bob, *, {other}, tenant:{other}, run.submit, allow\n"
        )
        async with await KernosClient.connect(settings, api_key=token) as client:
            handle = await client.submit(RunSpec(agent="echo", task="hi", tenant=other))
            await handle.result()
            assert (await client.show(handle.run_id)).record.tenant == other
            async with client.pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT tenant, decision FROM audit WHERE syscall = 'run.submit'"
                    " AND resource = %s ORDER BY id",
                    (f"tenant:{other}",),
                )
                rows = [tuple(row.values()) for row in await cursor.fetchall()]
                # Refused, in bob's own chain; admitted, in the run's tenant's.
                assert rows == [(home, "deny"), (other, "allow")]

    key_id = token.split("_")[1]
    code, out, _ = await kernos(config, "keys", "revoke", key_id)
    assert (code, out.strip()) == (0, f"revoked key {key_id} ({home}/bob)")
    code, _, err = await kernos(config, "run", "echo", "hi", "--api-key", token)
    assert_one_line_error(code, err, "authentication failed: present a valid, unrevoked")


@pytest.mark.parametrize(
    "token",
    ["", "not-a-key", "kn_0123456789ab_short", "kn_0123456789ab_" + "A" * 43],
)
async def test_a_bad_key_authenticates_nobody(kernos_client: KernosClient, token: str) -> None:
    with pytest.raises(AuthenticationFailed):
        await ApiKeyStore(kernos_client.pool).authenticate(token)


async def test_a_right_id_with_a_wrong_secret_is_refused(kernos_client: KernosClient) -> None:
    store = ApiKeyStore(kernos_client.pool)
    key, token = await kernos_client.create_key(user="u", tenant="t")
    assert (await store.authenticate(token)).key_id == key.id
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        await store.authenticate(forged)


async def test_no_key_is_the_operators(kernos_client: KernosClient) -> None:
    # `operator` is who acts on the kernel's host; the default policy lets it decide everything.
    with pytest.raises(InvalidRequest, match="'operator' is the kernel host's operator"):
        await kernos_client.create_key(user="operator", tenant="t")


async def test_a_kernel_can_require_a_key(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = make_settings(temporal, postgres, require_api_key=True)
    async with await KernosClient.connect(settings) as client:  # the operator still administers
        with pytest.raises(AuthenticationFailed, match="requires an API key to submit runs"):
            await client.submit(RunSpec(agent="echo", task="hi"))
    config = config_file(settings, tmp_path)
    code, _, err = await kernos(config, "run", "echo", "hi", "--tenant", "x", "--user", "y")
    assert_one_line_error(code, err, "this kernel requires an API key")
