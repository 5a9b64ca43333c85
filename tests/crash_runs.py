"""A framework's tool-using agent through the real kernel, both workers killed (`SIGKILL`) while
its answer streams: what the adapters' crash tests share."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernos import KernosClient, RunResult, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.testing.fake_openai import FakeOpenAIServer
from tests.processes import WorkerProcess, write_worker_configs
from tests.test_tools import ledger, tool_settings
from tests.waiting import eventually


def calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The model calls the calculator until it has its answer."""
    answered = any(m["role"] == "tool" for m in body["messages"])
    return [] if answered else [{"name": "calculator", "arguments": {"expression": "12*34"}}]


@dataclass
class Crashed:
    """How the run went on after the crash."""

    result: RunResult
    ledger: list[Any]
    #: For each request the server had: whether it asked for a tool call (True) or the answer.
    tool_turns: list[bool]
    #: For each request for the answer: whether it was answered whole.
    answers_completed: list[bool]


async def killed_while_answering(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    agents: dict[str, str], agent: str,
) -> Crashed:  # fmt: skip
    """Run `agent` on "What is 12 * 34?"; kill both workers while the answer streams."""
    # The model calls the calculator at once, then streams its answer over ~1.5 s: both workers
    # die while it streams. The new agent worker replays the run from the history (the first
    # answer, the tool's result); the new kernel worker generates the answer again.
    async with FakeOpenAIServer(
        lambda body: "408 it is" + " ." * 28, token_delay_s=0.05, tool_calls=calls
    ) as server:
        instance = {"name": "slow", "kind": "openai", "model": "slow",
                    "base_url": server.base_url, "tool_calling": "native"}  # fmt: skip
        settings = tool_settings(
            temporal, postgres, tmp_path, llm=[instance], agents=agents,
            limits={"llm_heartbeat_s": 2.0},
        )  # fmt: skip
        config, agent_config = write_worker_configs(settings, tmp_path)
        agent_worker = await WorkerProcess(agent_config, "agent", tmp_path / "agent.log").start()
        kernel = await WorkerProcess(config, "kernel", tmp_path / "kernel-1.log").start()
        replacements: list[WorkerProcess] = []
        tenant = f"crash-{uuid.uuid4().hex[:8]}"

        def answering() -> list[bool]:
            return [r.completed for r in server.requests if not calls(r.body)]

        try:
            async with await KernosClient.connect(settings) as client:
                handle = await client.submit(
                    RunSpec(agent=agent, task="What is 12 * 34?", tenant=tenant)
                )
                await eventually(lambda: answering() == [False], what="the answer streaming",
                                 every_s=0.05)  # fmt: skip
                agent_worker.kill()
                kernel.kill()
                for kind, where, log in (("agent", agent_config, "agent-2.log"),
                                         ("kernel", config, "kernel-2.log")):  # fmt: skip
                    replacements.append(await WorkerProcess(where, kind, tmp_path / log).start())
                result = await asyncio.wait_for(handle.result(), 120)
                rows = await ledger(client, tenant)
        finally:
            for process in (agent_worker, kernel, *replacements):
                await process.stop()
        return Crashed(
            result=result,
            ledger=rows,
            tool_turns=[bool(calls(r.body)) for r in server.requests],
            answers_completed=answering(),
        )
