"""Pools: each tenant's agent code in a child process of its own, driven by the host."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from kernos import KernosClient, RunFailed, RunSpec
from kernos.cli_stack import cmd_status
from kernos.infra.pool_limits import cgroups_shortfall
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import DatabaseSettings, state_dir
from kernos.worker import WorkerGroup
from kernos.workflows.host_reports_workflow import HostReports
from kernos.workflows.pool_host import PoolExhausted, PoolRunner
from kernos.workflows.pool_status import fresh_reports
from tests.conftest import make_settings, workers
from tests.waiting import eventually


def pools_of(group: WorkerGroup) -> PoolRunner:
    assert group.pools is not None
    return group.pools


async def until_pool(group: WorkerGroup, pool: str) -> int:
    """Wait until the pool has a process; its pid."""
    pid = await eventually(
        lambda: pools_of(group).pools().get(pool),
        lambda pid: pid is not None, what=f"pool {pool} started",
    )  # fmt: skip
    assert pid is not None
    return pid


async def test_each_tenant_gets_a_pool_and_an_operator_can_split_one(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    acme, globex = f"acme-{uuid.uuid4().hex[:6]}", f"globex-{uuid.uuid4().hex[:6]}"
    settings = make_settings(
        temporal, postgres, isolation={"pools": {f"{acme}/steps": "steps-pool"}}
    )
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        runs = [
            await client.submit(RunSpec(agent="echo", task="a", tenant=acme)),
            await client.submit(RunSpec(agent="steps", task="1", tenant=acme)),
            await client.submit(RunSpec(agent="echo", task="b", tenant=globex)),
        ]
        for run in runs:
            await run.result()
        pools = pools_of(group).pools()
        # Each pool's process is bubblewrap's, with the child confined inside it.
        commands = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pools.values()}
    assert set(pools) == {acme, f"{acme}/steps-pool", globex}
    assert len(set(pools.values())) == 3  # three processes
    assert commands == {"bwrap"}


async def test_a_run_outlives_its_pools_process(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    tenant = f"crash-{uuid.uuid4().hex[:6]}"
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        run = await client.submit(RunSpec(agent="pausing", task="2", tenant=tenant))
        pid = await until_pool(group, tenant)
        # SIGKILL the bubblewrap process: it takes the pool's child with it.
        os.kill(pid, signal.SIGKILL)
        result = await run.result()
        assert pools_of(group).pools()[tenant] not in (None, pid)
    assert result.output.count("scripted reply") == 2


@pytest.mark.parametrize("mode", ["bwrap", "in_process"])
async def test_an_activation_slower_than_the_sdks_two_seconds_is_no_deadlock(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: str
) -> None:
    """The SDK takes an activation over 2 s for a deadlock and retries it after a growing
    backoff; `[isolation] activation_timeout_s` is how long one may take, in either mode."""
    settings = make_settings(temporal, postgres, isolation={"mode": mode})
    async with workers(settings), await KernosClient.connect(settings) as client:
        run = await client.submit(
            RunSpec(agent="dawdler", task="3", tenant=f"slow-{uuid.uuid4().hex[:6]}")
        )
        result = await asyncio.wait_for(run.result(), timeout=60)
        history = await client.temporal.get_workflow_handle(run.run_id).fetch_history()
    assert result.output == "awake"
    failed = [e for e in history.events if e.HasField("workflow_task_failed_event_attributes")]
    assert failed == []


async def test_without_confinement_a_host_serves_one_pool(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres, isolation={"mode": "process"})
    first, second = f"one-{uuid.uuid4().hex[:6]}", f"two-{uuid.uuid4().hex[:6]}"
    async with workers(settings), await KernosClient.connect(settings) as client:
        assert "echo" in (await (await client.submit(
            RunSpec(agent="echo", task="echo", tenant=first))).result()).output  # fmt: skip
        refused = await client.submit(RunSpec(agent="echo", task="x", tenant=second))
        with pytest.raises(RunFailed) as failed:
            await refused.result()
    assert failed.value.error_type == "CommandRefused"
    assert f"already runs pool {first!r}; pool {second!r} would share its process" in (
        failed.value.message
    )


async def test_broken_agent_modules_keep_no_one_else_from_running(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    """One tenant's module that is missing, raises, ends its process or hangs at import is
    named at the host's start, and fails its own runs; the host serves everyone else."""
    broken = {
        "gone": "tests.no_such_module:Agent",
        "raises": "tests.broken_modules.raises:Agent",
        "exits": "tests.broken_modules.exits:Agent",
        "hangs": "tests.broken_modules.hangs:Agent",
    }
    settings = make_settings(
        temporal,
        postgres,
        agents={"echo": "tests.agents:EchoAgent", **broken},
        isolation={"activation_timeout_s": 5},
    )
    tenant = f"careless-{uuid.uuid4().hex[:6]}"
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        echo = await client.submit(RunSpec(agent="echo", task="served", tenant=tenant))
        assert "served" in (await echo.result()).output
        failing = await client.submit(RunSpec(agent="raises", task="x", tenant=tenant))
        with pytest.raises(RunFailed) as failed:
            await failing.result()
        found = await asyncio.to_thread(pools_of(group).checked.result, 120)
    assert "a tenant's bug at import" in failed.value.message
    assert set(found) == set(broken)
    assert "cannot import agent module 'tests.no_such_module'" in found["gone"]
    assert "a tenant's bug at import" in found["raises"]
    assert "ended the process" in found["exits"]
    assert "took over 5 s" in found["hangs"]


async def test_an_idle_pool_stops_and_its_woken_run_replays_in_a_new_one(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres, isolation={"idle_s": 1.5})
    tenant = f"sleepy-{uuid.uuid4().hex[:6]}"
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        run = await client.submit(RunSpec(agent="pausing", task="6", tenant=tenant))
        first = await until_pool(group, tenant)
        # In its 6 s timer the pool answers nothing: its process is stopped.
        await eventually(
            lambda: tenant not in pools_of(group).pools(), what="the idle pool stopped"
        )
        # Its timer's end wakes it in a new process (looked for as it comes: once the run is
        # done, that process too stops after 1.5 s idle).
        await eventually(
            lambda: pools_of(group).pools().get(tenant) not in (None, first),
            what="the woken run's new pool",
        )
        result = await run.result()
    assert result.output.count("scripted reply") == 2


def test_a_pool_whose_process_keeps_ending_waits_for_another(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # Code that ends its process between activations is never caught running: the pool's
    # own count of restarts stops it from using up new processes.
    runner = PoolRunner(make_settings(temporal, postgres))
    for _ in range(10):
        runner._restarted("crashy")
    with pytest.raises(PoolExhausted, match="its process ended 10 times in 5 minutes"):
        runner._restarted("crashy")
    runner._restarted("another")  # the budget is the pool's own


async def test_kernos_status_lists_the_pools_of_an_agent_host_on_another_machine(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # An agent host on a "machine" of its own (a state directory nobody else reads), and
    # `kernos status` on another, beside kernel workers: it sees the host's pool through
    # Temporal, and no longer once the host stops.
    reports = f"hosts-{uuid.uuid4().hex[:6]}"
    settings = make_settings(temporal, postgres, isolation={"reports_workflow_id": reports})
    agent_only = settings.model_copy(update={"database": DatabaseSettings()})
    tenant = f"far-{uuid.uuid4().hex[:6]}"
    for machine in ("agents", "status"):
        (tmp_path / machine).mkdir()

    async def status() -> dict[str, Any]:
        await cmd_status(settings, argparse.Namespace(json=True))
        said: dict[str, Any] = json.loads(capsys.readouterr().out)
        return said

    def pools(said: dict[str, Any]) -> list[str]:
        return [pool["pool"] for host in said["agent_hosts"] for pool in host["pools"]]

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(workers(settings, kind="kernel"))
        client = await stack.enter_async_context(await KernosClient.connect(settings))
        monkeypatch.setenv("KERNOS_STATE_DIR", str(tmp_path / "agents"))
        host = contextlib.AsyncExitStack()
        await stack.enter_async_context(host)  # closed with the rest, if not before
        group = await host.enter_async_context(workers(agent_only, kind="agent"))
        run = await client.submit(RunSpec(agent="pausing", task="30", tenant=tenant))
        stack.push_async_callback(run.cancel)
        pid = await until_pool(group, tenant)
        monkeypatch.setenv("KERNOS_STATE_DIR", str(tmp_path / "status"))

        said = await eventually(status, lambda said: tenant in pools(said), what="the pool")
        assert said["agent_hosts_unread"] is None
        assert [p["pid"] for h in said["agent_hosts"] for p in h["pools"]] == [pid]
        # Read from Temporal: the agent host's report is in its own machine's directory only.
        assert list((tmp_path / "agents" / "pools").glob("*.json"))
        assert not (tmp_path / "status" / "pools").exists()
        # The host stops: its report is withdrawn.
        await host.aclose()
        await eventually(status, lambda said: tenant not in pools(said), what="withdrawn")
        # With reports kept on each machine only, `kernos status` says what it did not read.
        off = settings.isolation.model_copy(update={"reports_workflow_id": ""})
        await cmd_status(
            settings.model_copy(update={"isolation": off}), argparse.Namespace(json=True)
        )
        assert (
            "reports_workflow_id is off"
            in json.loads(capsys.readouterr().out)["agent_hosts_unread"]
        )
        # Its history replays with the code that wrote it.
        history = await client.temporal.get_workflow_handle(reports).fetch_history()
        replayer = Replayer(workflows=[HostReports], data_converter=pydantic_data_converter)
        await replayer.replay_workflow(history)


async def test_kernos_status_lists_each_hosts_pools(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    settings = make_settings(temporal, postgres)
    tenant = f"listed-{uuid.uuid4().hex[:6]}"
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        # Longer than two of the host's reports (one each 5 s), so that one sees the run.
        run = await client.submit(RunSpec(agent="pausing", task="12", tenant=tenant))
        pid = await until_pool(group, tenant)
        listed = await eventually(
            lambda: [p for h in fresh_reports(state_dir()) for p in h.pools
                     if p.pool == tenant and p.runs == 1],
            what="a host reporting the pool", every_s=0.2,
        )  # fmt: skip
        await cmd_status(settings, argparse.Namespace(json=False))
        table = capsys.readouterr().out
        await run.result()
    assert listed[0].pid == pid
    if cgroups_shortfall() is None:
        assert (listed[0].memory_bytes or 0) > 10 * 2**20  # an interpreter, counted by its cgroup
    assert any(line.startswith(tenant) and str(pid) in line for line in table.splitlines())
    # A host that stopped takes its report with it.
    assert not any(p.pool == tenant for h in fresh_reports(state_dir()) for p in h.pools)
