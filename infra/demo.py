"""`make demo` (interim): the example agent on the scripted backend, through the whole kernel.

Starts Temporal's dev server and embedded PostgreSQL (state under .kernos/), applies the
migrations, runs agent and kernel workers in this process, submits the planner agent, prints its
answer, run id and tokens, and stops everything it started.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from kernos.client import KernosClient, connect_temporal
from kernos.infra.ports import port_in_use
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.process import exit_process
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import load_settings
from kernos.kernel.db import upgrade
from kernos.kernel.syscalls import RunSpec
from kernos.worker import RunningWorkers, WorkerGroup

STATE = Path(".kernos")
TASK = "Explain in two sentences why durable execution matters for LLM agents."


async def main() -> int:
    """Bring the stack up, run one agent, print what it did, bring the stack down."""
    postgres = EmbeddedPostgres.start(STATE / "postgres")
    # Temporal's usual ports when they are free, so the UI is where people expect it.
    temporal = await TemporalDevServer.start(
        port=None if port_in_use(7233) else 7233,
        ui_port=None if port_in_use(8233) else 8233,
        db_file=STATE / "temporal.db",
        log_file=STATE / "temporal.log",
    )
    try:
        await upgrade(postgres.dsn())
        settings = load_settings(
            temporal={"address": temporal.address, "ui_url": temporal.ui_url},
            database={"dsn": postgres.dsn()},
        )
        client = await connect_temporal(settings)
        group = await WorkerGroup.create(client, settings)
        async with RunningWorkers(group), await KernosClient.connect(settings) as kernos:
            handle = await kernos.submit(RunSpec(agent="planner", task=TASK, tenant="demo"))
            result = await handle.result()
            view = await kernos.show(handle.run_id)
        print(f"task:     {TASK}")
        print(f"answer:   {result.output}")
        print(f"run id:   {result.run_id}")
        print(
            f"syscalls: {result.syscalls} ({', '.join(c.decision for c in view.syscalls)}), "
            f"tokens: {result.usage.input_tokens} in, {result.usage.output_tokens} out"
        )
        print("backend:  the scripted LLM backend (a real local model comes with `kernos up`)")
        print(f"UI:       {temporal.ui_url}/namespaces/default/workflows/{result.run_id}")
        print("          (live while the dev server runs; this demo stops it on exit)")
        return 0
    finally:
        temporal.stop()
        postgres.stop()


if __name__ == "__main__":
    STATE.mkdir(exist_ok=True)
    exit_process(asyncio.run(main()))
