"""Nothing a workflow claims about a syscall is believed: each forged claim is refused and audited.

The hostile agent (tests.agents.ForgerAgent) schedules its own activity, as agent code escaping
the dispatcher would, with one option forged at a time; the kernel compares each with the
syscall table and with what it fixed when it admitted the run.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kernos import ConfigError, KernosClient, RunSpec, Settings, load_settings
from kernos.client import SyscallView
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.llm.scripted import ScriptedBackend
from tests.conftest import make_settings, workers
from tests.test_cli import config_file, kernos

DEFAULT_POLICY = (Path(__file__).parent.parent / "policies" / "policy.csv").read_text()


def claim_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path, tenant: str
) -> Settings:
    """Two models, `open` and `closed`; the tenant may use only `open`."""
    path = tmp_path / "policy.csv"
    path.write_text(f"{DEFAULT_POLICY}p, *, *, {tenant}, llm:closed, llm.*, deny\n")
    return make_settings(
        temporal, postgres,
        llm=[
            {"name": "open-1", "kind": "scripted", "model": "open"},
            {"name": "closed-1", "kind": "scripted", "model": "closed"},
        ],
        policy={"policy_path": str(path)},
    )  # fmt: skip


async def forge(
    client: KernosClient, tenant: str, forged: dict[str, Any], *, priority: int = 3
) -> tuple[str, str, list[SyscallView]]:
    """One forger run: its id, what it returned, and its syscalls as `kernos show` has them."""
    handle = await client.submit(
        RunSpec(agent="forger", task=json.dumps(forged), tenant=tenant, model="open",
                priority=priority)
    )  # fmt: skip
    output = (await handle.result()).output
    return handle.run_id, output, (await client.show(handle.run_id)).syscalls


def forged_cases(settings: Settings) -> list[tuple[str, dict[str, Any], str]]:
    """(case, what the forger sends, what the refusal must say)."""
    prefix = settings.temporal.llm_queue_prefix
    tools = settings.tools.queue_prefix
    return [
        (
            "another model's queue",
            {"model": "open", "queue": f"{prefix}closed"},
            f"names model 'open' but was scheduled on queue '{prefix}closed', whose instances "
            "serve 'closed'",
        ),
        (
            "a higher priority and another tenant's fairness",
            {"priority": {"priority_key": 1, "fairness_key": "victim", "fairness_weight": 1000}},
            "claimed priority key 1, fairness key 'victim' weight 1000; run run-",
        ),
        (
            "a priority on a kernel syscall",
            {"syscall": "storage.write", "priority": {"priority_key": 1}},
            "storage.write claimed priority key 1",
        ),
        (
            "a longer start-to-close timeout",
            {"start_to_close_s": 36_000},
            "claimed a start-to-close timeout of 36000 s; the run's is 600 s",
        ),
        (
            "a longer heartbeat timeout",
            {"heartbeat_s": 300},
            "claimed a heartbeat timeout of 300 s; the run's is 30 s",
        ),
        (
            "a tighter retry loop",
            {"retry": {"initial_interval": 0.001, "maximum_interval": 0.001}},
            "claimed retry policy (initial 0.001 s",
        ),
        ("fewer attempts", {"retry": {"maximum_attempts": 1}}, "1 attempts"),
        (
            "a tool on another tool's queue",
            {"syscall": "tool.call", "tool": "write_file", "queue": f"{tools}calculator",
             "arguments": json.dumps({"path": "x.txt", "content": "forged"})},
            f"names tool 'write_file' but was scheduled on queue '{tools}calculator'",
        ),
    ]  # fmt: skip


async def test_each_forged_claim_is_refused_and_audited(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"claims-{uuid.uuid4().hex[:8]}"
    settings = claim_settings(temporal, postgres, tmp_path, tenant)
    open_, closed = ScriptedBackend(), ScriptedBackend()
    backends = {"open-1": open_, "closed-1": closed}
    async with workers(settings, backends=backends), await KernosClient.connect(settings) as client:
        _, honest, calls = await forge(client, tenant, {}, priority=5)
        assert honest.startswith("ok: scripted reply"), honest
        assert [(c.syscall, c.decision, c.basis) for c in calls] == [
            ("llm.chat", "allow", "policy")
        ]
        for case, forged, said in forged_cases(settings):
            run_id, output, calls = await forge(client, tenant, forged, priority=5)
            assert output.startswith("refused AccessDenied: "), f"{case}: {output}"
            assert said in output, f"{case}: {output}"
            [call] = calls
            assert (call.decision, call.basis, call.outcome) == ("deny", "claim", None), case
            assert said in (call.reason or ""), case
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM files WHERE tenant = %(t)s) AS files,"
                " (SELECT count(*) FROM tool_calls WHERE tenant = %(t)s) AS tool_calls",
                {"t": tenant},
            )
            assert await cursor.fetchone() == {"files": 0, "tool_calls": 0}
        # The operator's `kernos show` names the false claim.
        code, shown, err = await kernos(config_file(settings, tmp_path), "show", run_id)
    assert code == 0, err
    assert "deny:claim" in shown and said in shown
    assert closed.calls == 0  # the closed model served nothing
    assert open_.calls == 1  # only the honest call was generated


async def test_an_honest_run_outlives_a_change_of_weights(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"weights-{uuid.uuid4().hex[:8]}"
    admitted = claim_settings(temporal, postgres, tmp_path, tenant)
    admitted = admitted.model_copy(
        update={
            "scheduler": admitted.scheduler.model_copy(
                update={"policy": "fair", "tenant_weights": {tenant: 2.5}}
            )
        }
    )
    # The kernel's workers now run with another weight for the tenant: the run's record, not
    # today's settings, says what its syscalls may claim.
    serving = admitted.model_copy(
        update={
            "scheduler": admitted.scheduler.model_copy(update={"tenant_weights": {tenant: 7.0}})
        }
    )
    async with workers(serving), await KernosClient.connect(admitted) as client:
        handle = await client.submit(RunSpec(agent="steps", task="2", tenant=tenant, model="open"))
        result = await handle.result()
        view = await client.show(handle.run_id)
    assert result.output.count("scripted reply") == 2
    assert [(c.syscall, c.decision) for c in view.syscalls] == [("llm.chat", "allow")] * 2
    assert view.record.scheduling.fairness_weight == 2.5


@pytest.mark.parametrize("weight", [0.0001, 5000.0])
def test_weights_outside_temporals_range_are_refused(weight: float) -> None:
    # Temporal would clamp them, and the claimed weight would no longer be the run's.
    with pytest.raises(ConfigError, match=r"between 0\.001 and 1000 \(Temporal's range\)"):
        load_settings(scheduler={"tenant_weights": {"acme": weight}})
