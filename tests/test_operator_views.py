"""`kernos instances` and `kernos queues`: what each server and queue is doing."""

from __future__ import annotations

import json
from pathlib import Path

from kernos import KernosClient, LLMInstance, RunSpec
from kernos.infra.llama import MODEL_ALIAS, LlamaServer
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.llm.probe import probe
from kernos.kernel.queues import QueueStatus, describe_queues
from kernos.testing.fake_openai import FakeOpenAIServer
from kernos.testing.fake_sglang import FakeSGLangServer
from tests.conftest import make_settings, workers
from tests.test_cli import config_file, kernos
from tests.waiting import eventually


async def test_instances_are_probed(llama: LlamaServer) -> None:
    live = await probe(LLMInstance(name="local", model=MODEL_ALIAS, base_url=llama.base_url))
    assert live.healthy
    assert live.server_slots == 4
    assert live.running == 0
    assert live.queued == 0
    dead = await probe(
        LLMInstance(name="gone", model="m", base_url=f"http://127.0.0.1:{free_port()}")
    )
    assert not dead.healthy
    assert dead.detail == "unreachable: ConnectError"
    scripted = await probe(LLMInstance(name="s", kind="scripted", model="s"))
    assert scripted.healthy


async def test_queues_show_the_backlog(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    async with FakeOpenAIServer(lambda _: "busy " * 60, token_delay_s=0.05) as server:
        settings = make_settings(
            temporal,
            postgres,
            # Every waiting call stays in the queue the view shows (none sent ahead to wait
            # at the server).
            llm=[{"name": "one", "model": "one", "base_url": server.base_url, "slots": 1,
                  "queued": 0}],
        )  # fmt: skip
        async with workers(settings), await KernosClient.connect(settings) as client:
            handles = [
                await client.submit(RunSpec(agent="echo", task=f"t{i}", priority=p))
                for i, p in enumerate((3, 1, 5, 5))
            ]

            async def described() -> dict[str, QueueStatus]:
                return {q.name: q for q in await describe_queues(client.temporal, settings)}

            # Temporal's queue statistics are approximate and refreshed lazily.
            llm_queue = f"{settings.temporal.llm_queue_prefix}one"
            queues = await eventually(
                described, lambda queues: queues[llm_queue].backlog >= 2,
                what="a backlog of 2", every_s=0.2,
            )  # fmt: skip
            llm = queues[llm_queue]
            code, out, err = await kernos(config_file(settings, tmp_path), "queues", "--json")
            for handle in handles:
                await handle.cancel()
    assert llm.kind == "activity"
    assert llm.pollers >= 1
    assert set(llm.backlog_by_priority) <= {1, 3, 5}
    assert queues[settings.temporal.agent_task_queue].kind == "workflow"
    assert code == 0, err
    listed = {q["name"] for q in json.loads(out)["queues"]}
    assert listed == set(queues)


async def test_instances_lists_an_sglang_server(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    async with FakeSGLangServer(max_running_requests=6) as server:
        settings = make_settings(
            temporal,
            postgres,
            llm=[{"name": "gpu0", "kind": "sglang", "model": "m", "base_url": server.base_url}],
        )
        code, out, err = await kernos(config_file(settings, tmp_path), "instances")
    assert code == 0, err
    header, line = out.splitlines()[:2]
    assert header.split()[:8] == [
        "INSTANCE", "KIND", "MODEL", "HEALTHY", "SLOTS", "RUNNING", "QUEUED", "CACHE",
    ]  # fmt: skip
    assert line.split()[:8] == ["gpu0", "sglang", "m", "yes", "4", "0", "0", "0%"]
