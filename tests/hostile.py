"""Shared by the hostile-agent tests: settings, a victim, and running a probe.

This module never imports `tests.hostile_agents`, whose import-time code is the attack: only
the pools' children (and, unconfined, the worker) may run it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from kernos import KernosClient, RunHandle, RunSpec, RunView, Settings
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests.conftest import make_settings
from tests.waiting import eventually

#: The hostile agents, and the victims, by name.
HOSTILE_AGENTS = {
    "probe": "tests.hostile_agents:ProbeAgent",
    "keeper": "tests.hostile_agents:KeeperAgent",
    "patcher": "tests.hostile_agents:PatcherAgent",
    "commander": "tests.hostile_agents:CommanderAgent",
    "stubborn": "tests.hostile_agents:StubbornAgent",
    "trusting": "tests.hostile_agents:TrustingAgent",
    "hog": "tests.hostile_agents:HogAgent",
    "forker": "tests.hostile_agents:ForkerAgent",
    "spinner": "tests.hostile_agents:SpinnerAgent",
    "crasher": "tests.hostile_agents:CrasherAgent",
    "loader": "tests.hostile_agents:LoaderAgent",
    "reweigher": "tests.hostile_agents:ReweigherAgent",
    "renicer": "tests.hostile_agents:RenicerAgent",
    "flooder": "tests.hostile_agents:FlooderAgent",
    "continuer": "tests.hostile_agents:ContinuerAgent",
    "wanderer": "tests.hostile_agents:WandererAgent",
    "timers": "tests.hostile_agents:TimerAgent",
    "historian": "tests.hostile_agents:HistorianAgent",
    "bloater": "tests.hostile_agents:BloaterAgent",
    "holder": "tests.hostile_agents:HolderAgent",
    "launderer": "tests.hostile_agents:LaundererAgent",
    "asker": "tests.hostile_agents:AskerAgent",
    "forger": "tests.hostile_agents:ForgerAgent",
    "echo": "tests.agents:EchoAgent",
}
Mode = Literal["bwrap", "in_process"]


def hostile_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: Mode, /, **overrides: Any
) -> Settings:
    """Settings whose agents are the hostile ones, confined by `mode`."""
    return make_settings(
        temporal, postgres, agents=HOSTILE_AGENTS, isolation={"mode": mode}, **overrides
    )


async def probe(client: KernosClient, tenant: str, **asked: Any) -> dict[str, Any]:
    """Run the probe agent in `tenant`; what it found."""
    handle = await client.submit(RunSpec(agent="probe", task=json.dumps(asked), tenant=tenant))
    found: dict[str, Any] = json.loads((await handle.result()).output)
    return found


async def keep_secret(client: KernosClient, tenant: str, secret: str, seconds: float) -> RunHandle:
    """A victim's run holding `secret` in memory for `seconds`, once its first syscall is done."""
    handle = await client.submit(RunSpec(agent="keeper", task=f"{secret} {seconds}", tenant=tenant))
    await until_syscalls(client, handle.run_id, 1)
    return handle


async def until_syscalls(client: KernosClient, run_id: str, count: int) -> None:
    """Wait until the run's audit shows `count` syscalls."""
    await eventually(
        lambda: client.show(run_id), lambda view: len(view.syscalls) >= count,
        what=f"{count} syscalls of {run_id}",
    )  # fmt: skip


async def until_recorded(client: KernosClient, run_id: str) -> RunView:
    """The run as `kernos show` has it, once the kernel recorded (and audited) its end."""

    def recorded(view: RunView) -> bool:
        # Recorded by the kernel from Temporal: its audit row follows the record.
        audited = any(call.syscall == "run.end" for call in view.syscalls)
        return view.record.finished and (not view.record.error or audited)

    return await eventually(
        lambda: client.show(run_id), recorded, what=f"{run_id} recorded as ended", every_s=0.2
    )
