"""Denial of service: a tenant whose agent code exhausts its pool hurts only its own runs.

Each attacker is agent code in a confined pool with small limits: a memory hog, a fork bomb,
a busy loop in workflow code, and code that ends its own process at every activation. Each
is contained by its pool's limits (cgroups here, as root) and the host's count of how often a
run's code ended its pool's process: the attacker's run fails, `PoolLimitExceeded`, naming
what ended it, while another tenant's run on the same host completes with its true output.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from kernos import KernosClient, RunFailed, RunSpec
from kernos.infra.pool_limits import cgroups_shortfall
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests.conftest import make_settings, workers
from tests.hostile import HOSTILE_AGENTS

LIMITS: dict[str, Any] = {
    "mode": "bwrap",
    "memory_mib": 400,
    "processes": 200,
    "activation_timeout_s": 3,
    "max_child_deaths": 2,
}


@pytest.mark.parametrize(
    ("attacker", "named"),
    [
        ("hog", "over its memory limit (400 MiB)"),
        ("spinner", "did not answer within 3 s"),
        ("crasher", "the pool's process exited"),
    ],
    ids=["memory-hog", "busy-loop", "crash-at-every-activation"],
)
async def test_an_attacker_that_keeps_ending_its_pool_fails_alone(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, attacker: str, named: str
) -> None:
    if attacker == "hog" and cgroups_shortfall() is not None:
        pytest.skip(f"memory limits need cgroups: {cgroups_shortfall()}")
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=LIMITS)
    async with workers(settings), await KernosClient.connect(settings) as client:
        attack = await client.submit(
            RunSpec(agent=attacker, task="go", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        victim = await client.submit(
            RunSpec(agent="echo", task="unharmed", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        with pytest.raises(RunFailed) as failed:
            await attack.result()
        assert "unharmed" in (await victim.result()).output
    assert failed.value.error_type == "PoolLimitExceeded", failed.value
    # At least the limit's count: a death the SDK had already given up on counts too.
    assert re.search(r"broke its pool's process [2-9] times", failed.value.message)
    assert named in failed.value.message


async def test_a_fork_bomb_is_bounded_by_its_pool(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    if cgroups_shortfall() is not None:
        pytest.skip(f"process limits need cgroups: {cgroups_shortfall()}")
    # Memory enough for every fork's copy of the child: the process count is what stops it.
    limits = {**LIMITS, "memory_mib": 3000}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=limits)
    async with workers(settings), await KernosClient.connect(settings) as client:
        bomb = await client.submit(
            RunSpec(agent="forker", task="go", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        said = (await bomb.result()).output
        victim = await client.submit(
            RunSpec(agent="echo", task="unharmed", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        assert "unharmed" in (await victim.result()).output
    forked = int(said.split()[1].rstrip(","))
    # Its pool's process tree (the child's own threads included) stops at the pool's limit.
    assert 0 < forked < LIMITS["processes"], said
    assert "BlockingIOError" in said
