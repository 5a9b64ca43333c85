"""`kill -9` of a worker mid-syscall loses nothing and repeats nothing that had completed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.testing.fake_openai import FakeOpenAIServer
from tests.conftest import make_settings
from tests.processes import WorkerProcess, write_worker_configs
from tests.waiting import eventually


async def until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    await eventually(condition, what="the condition", timeout_s=timeout_s, every_s=0.05)


async def test_workers_killed_mid_syscall(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    # Each generation streams 30 words over ~1.5 s: long enough to be killed in the middle.
    async with FakeOpenAIServer(
        lambda body: body["messages"][-1]["content"] + " done" + " ." * 28, token_delay_s=0.05
    ) as server:
        settings = make_settings(
            temporal,
            postgres,
            llm=[{"name": "slow", "kind": "openai", "model": "slow", "base_url": server.base_url}],
            limits={"llm_heartbeat_s": 2.0},
        )
        config, agent_config = write_worker_configs(settings, tmp_path)
        assert "postgresql" not in agent_config.read_text()
        agent = await WorkerProcess(agent_config, "agent", tmp_path / "agent.log").start()
        kernel = await WorkerProcess(config, "kernel", tmp_path / "kernel-1.log").start()
        replacements: list[WorkerProcess] = []
        try:
            async with await KernosClient.connect(settings) as client:
                handle = await client.submit(RunSpec(agent="steps", task="4"))

                def sent(step: int) -> list[bool]:
                    return [
                        r.completed
                        for r in server.requests
                        if r.body["messages"][-1]["content"] == f"step {step}"
                    ]

                # The kernel worker dies while step 1 streams (step 0 has completed).
                await until(lambda: sent(0) == [True] and sent(1) == [False])
                await asyncio.sleep(0.3)
                kernel.kill()
                replacements.append(
                    await WorkerProcess(config, "kernel", tmp_path / "kernel-2.log").start()
                )
                # The agent worker dies while step 2 streams.
                await until(lambda: len(sent(2)) == 1 and not sent(2)[0])
                agent.kill()
                replacements.append(
                    await WorkerProcess(agent_config, "agent", tmp_path / "agent-2.log").start()
                )
                result = await asyncio.wait_for(handle.result(), 120)
                view = await client.show(handle.run_id)
        finally:
            for process in (agent, kernel, *replacements):
                await process.stop()

    assert result.output.split(" | ")[0].startswith("step 0 done")
    assert result.syscalls == 4
    # Completed syscalls were never sent again; the one killed mid-stream was retried once.
    assert sent(0) == [True]
    assert sent(1) == [False, True]
    assert sent(2) == [True]
    assert sent(3) == [True]
    assert [r.aborted for r in server.requests].count(True) == 1
    attempts = [(c.attempt, c.outcome) for c in view.syscalls]
    assert attempts == [(1, "ok"), (1, None), (2, "ok"), (1, "ok"), (1, "ok"), (1, None)]
