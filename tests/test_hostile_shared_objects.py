"""Attack 3, shared objects: no kernos object or memory is shared by two pools.

kernos's modules are passed through Temporal's sandbox, so every run in one process shares
their classes: unconfined, a run that replaces a method of the syscall dispatcher changes
another tenant's run, and a walk of the process's objects finds another tenant's data.
Confined, each tenant's pool is its own process: neither reaches the other.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.workflows.dispatcher import SyscallDispatcher
from tests.conftest import workers
from tests.hostile import Mode, hostile_settings, keep_secret, probe
from tests.waiting import until_timer


@pytest.mark.parametrize("mode", ["bwrap", "in_process"])
async def test_a_patched_dispatcher_reaches_another_pool_only_unconfined(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: Mode
) -> None:
    settings = hostile_settings(temporal, postgres, mode)
    original = SyscallDispatcher.__dict__["llm_chat"]
    try:
        async with workers(settings), await KernosClient.connect(settings) as client:
            patcher = await client.submit(
                RunSpec(agent="patcher", task="5", tenant=f"evil-{uuid.uuid4().hex[:6]}")
            )
            await until_timer(client.temporal, patcher.run_id)
            victim = await client.submit(
                RunSpec(agent="echo", task="hello", tenant=f"victim-{uuid.uuid4().hex[:6]}")
            )
            output = (await victim.result()).output
            assert (await patcher.result()).output == "patched"
    finally:
        SyscallDispatcher.llm_chat = original  # type: ignore[method-assign]
    if mode == "in_process":
        assert output == "HIJACKED"
    else:
        assert output != "HIJACKED" and "hello" in output


@pytest.mark.parametrize("mode", ["bwrap", "in_process"])
async def test_another_tenants_secret_is_out_of_reach_only_confined(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: Mode
) -> None:
    settings = hostile_settings(temporal, postgres, mode)
    secret = f"secret-{uuid.uuid4().hex}"
    async with workers(settings), await KernosClient.connect(settings) as client:
        kept = await keep_secret(client, f"victim-{uuid.uuid4().hex[:6]}", secret, seconds=3)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        found = await probe(client, f"evil-{uuid.uuid4().hex[:6]}", secret_sha256=digest)
        assert (await kept.result()).output == secret
    assert found["secret_seen"] is (mode == "in_process")
