"""A generation survives an interruption: it resumes from its token ids, not from the start."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from kernos import KernosClient, LLMRequest, Message, RunSpec, Sampling
from kernos.infra.llama import MODEL_ALIAS, LlamaServer
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.llm.base import Snapshot
from kernos.kernel.llm.llamacpp import LlamaCppBackend
from tests.conftest import make_settings, workers
from tests.processes import WorkerProcess, write_worker_configs
from tests.waiting import eventually

QUESTION = "List the planets of the solar system, one per line, with a fact about each."


def local_instance(llama: LlamaServer) -> dict[str, object]:
    """The llama.cpp fixture as a one-slot instance whose generations run long.

    The base model echoes a question and closes its turn; these tests need a generation long
    enough to cut, so it goes on past the template's turn markers.
    """
    return {
        "name": "local",
        "kind": "llamacpp",
        "model": MODEL_ALIAS,
        "base_url": llama.base_url,
        "slots": 1,
        "turn_markers": False,
    }


def request(max_tokens: int) -> LLMRequest:
    return LLMRequest(
        model=MODEL_ALIAS,
        messages=[Message(role="user", content=QUESTION)],
        sampling=Sampling(temperature=0.0, max_tokens=max_tokens),
    )


async def generate(
    backend: LlamaCppBackend, max_tokens: int, resume: Snapshot | None = None
) -> tuple[list[int], str, int]:
    last: list[Snapshot] = []
    response = await backend.chat(request(max_tokens), last.append, resume)
    tokens = list(last[-1].tokens) if last else []
    return tokens, response.text, response.resumed_from


async def test_resumed_generation_equals_uninterrupted(llama: LlamaServer) -> None:
    backend = LlamaCppBackend("local", llama.base_url, turn_markers=False)
    try:
        whole, whole_text, _ = await generate(backend, 48)
        assert len(whole) > 20, "the model stopped too early for this test"
        head, head_text, _ = await generate(backend, 16)  # suspended at 16 tokens
        assert head == whole[:16]
        resumed, resumed_text, resumed_from = await generate(
            backend, 48, Snapshot(text=head_text, tokens=head)
        )
    finally:
        await backend.aclose()
    assert resumed_from == 16
    assert resumed == whole  # token for token
    assert resumed_text == whole_text


async def test_kernel_worker_killed_mid_generation_resumes(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, llama: LlamaServer, tmp_path: Path
) -> None:
    settings = make_settings(
        temporal,
        postgres,
        llm=[local_instance(llama)],
        limits={"llm_heartbeat_s": 1.5},
    )
    config, agent_config = write_worker_configs(settings, tmp_path)
    agent = await WorkerProcess(agent_config, "agent", tmp_path / "agent.log").start()
    kernel = await WorkerProcess(config, "kernel", tmp_path / "kernel-1.log").start()
    replacement: WorkerProcess | None = None
    try:
        async with await KernosClient.connect(settings) as client:
            handle = await client.submit(RunSpec(agent="long-answer", task=QUESTION))
            async with httpx.AsyncClient(base_url=llama.base_url) as http:

                async def processing() -> bool:
                    return any(s["is_processing"] for s in (await http.get("/slots")).json())

                await eventually(
                    processing, what="the generation started", timeout_s=60, every_s=0.05
                )
            # Killed once a second heartbeat has come (the first may carry no tokens yet): a
            # fixed sleep killed it before any on a loaded machine, after the end on an idle one.
            workflow = client.temporal.get_workflow_handle(handle.run_id)
            beats: set[bytes] = set()

            async def heartbeats() -> int:
                for pending in (await workflow.describe()).raw_description.pending_activities:
                    if pending.HasField("heartbeat_details"):
                        beats.add(pending.heartbeat_details.SerializeToString())
                return len(beats)

            await eventually(
                heartbeats, lambda count: count >= 2, what="two heartbeats of the generation",
                timeout_s=60, every_s=0.02,
            )  # fmt: skip
            kernel.kill()
            replacement = await WorkerProcess(config, "kernel", tmp_path / "kernel-2.log").start()
            result = await asyncio.wait_for(handle.result(), 120)
            view = await client.show(handle.run_id)
    finally:
        for process in (agent, kernel, replacement):
            if process is not None:
                await process.stop()
    resumed_from, output_tokens, _ = result.output.split(" ", 2)
    assert 0 < int(resumed_from) < int(output_tokens), result.output
    assert [(c.attempt, c.outcome) for c in view.syscalls] == [(1, None), (2, "ok"), (1, None)]


async def test_round_robin_slices_on_llama_equal_one_generation(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, llama: LlamaServer
) -> None:
    """Under `rr` the generation is cut every 8 tokens and resumed from its ids: greedy output
    equals the uninterrupted run's, and each continuation's prefix comes from the prompt cache."""
    outputs = {}
    for policy in ("fifo", "rr"):
        settings = make_settings(
            temporal,
            postgres,
            llm=[local_instance(llama)],
            scheduler={"policy": policy, "slice_tokens": 8},
        )
        async with workers(settings), await KernosClient.connect(settings) as client:
            handle = await client.submit(RunSpec(agent="length", task=f"40 {QUESTION}"))
            outputs[policy] = (await handle.result()).output
            history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
    payloads = [
        e.activity_task_completed_event_attributes.result.payloads[0].data
        for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
    ]
    slices = [json.loads(data) for data in payloads if data.startswith(b"{")]
    assert len(slices) == 5
    assert outputs["rr"] == outputs["fifo"]
    assert all(s["usage"]["cached_input_tokens"] > 0 for s in slices[1:]), slices
