"""Generation throughput of the local llama.cpp server, alone and through the kernel.

The server (Gemma 3 270M Q4_K_M on the CPU, `-np N`) is asked for 64-token answers: by one
client, then by N at once, straight over HTTP; then the same through kernos, one agent run per
request (admission, the AgentRun workflow, the access check and audit, the llm.chat activity).
Tokens are the server's own counts (`usage.completion_tokens`).
Run: `python bench/llm_throughput.py` (writes bench/results/llm_throughput.json).
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
from bench_results import run_benchmark, write_results

from kernos import KernosClient, RunSpec
from kernos.client import connect_temporal
from kernos.infra.daemons import stop
from kernos.infra.llama import MODEL_ALIAS, LlamaServer, local_model
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import load_settings
from kernos.kernel.db import upgrade
from kernos.worker import RunningWorkers, WorkerGroup

SLOTS = 4
ROUNDS = 3
PROMPT = "Write a short story about a lighthouse keeper."


async def direct(base_url: str, concurrency: int) -> float:
    """Tokens per second with `concurrency` clients straight to the server."""
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

        async def one() -> int:
            response = await client.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL_ALIAS,
                    "messages": [{"role": "user", "content": PROMPT}],
                    "max_tokens": 64,
                    "temperature": 0.8,
                    "seed": 1,
                },
            )
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one() for _ in range(concurrency * ROUNDS))))
        return tokens / (time.perf_counter() - started)


async def through_kernel(client: KernosClient, concurrency: int) -> float:
    """Tokens per second with `concurrency` agents at once, each making one LLM syscall."""

    async def one() -> int:
        handle = await client.submit(RunSpec(agent="one-chat", task=PROMPT))
        return (await handle.result()).usage.output_tokens

    started = time.perf_counter()
    tokens = 0
    for _ in range(ROUNDS):
        tokens += sum(await asyncio.gather(*(one() for _ in range(concurrency))))
    return tokens / (time.perf_counter() - started)


async def main() -> None:
    work = Path(tempfile.mkdtemp())
    model = local_model(Path.home() / ".cache" / "kernos" / "models")
    llama = await LlamaServer.start(
        model, port=free_port(), slots=SLOTS, context=1024 * SLOTS, log_file=work / "llama.log"
    )
    postgres = EmbeddedPostgres.start(work / "pg")
    temporal = await TemporalDevServer.start(headless=True)
    try:
        await upgrade(postgres.dsn(role="owner"))
        settings = load_settings(
            temporal={"address": temporal.address},
            database={"dsn": postgres.dsn()},
            llm=[
                {"name": "local", "model": MODEL_ALIAS, "base_url": llama.base_url, "slots": SLOTS}
            ],
            agents={"one-chat": "bench_workloads:OneChatAgent"},
        )
        figures: dict[str, dict[str, float]] = {"direct": {}, "kernel": {}}
        await direct(llama.base_url, 1)  # warm up the server and its prompt cache
        for concurrency in (1, SLOTS):
            figures["direct"][str(concurrency)] = await direct(llama.base_url, concurrency)
        group = await WorkerGroup.create(await connect_temporal(settings), settings)
        async with RunningWorkers(group), await KernosClient.connect(settings) as client:
            await through_kernel(client, 1)
            for concurrency in (1, SLOTS):
                figures["kernel"][str(concurrency)] = await through_kernel(client, concurrency)
    finally:
        stop(llama.pid)
        temporal.stop()
        postgres.stop(delete=True)

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "model": f"{MODEL_ALIAS} Q4_K_M, llama-server -np {SLOTS} --threads 2",
        "tokens_per_s": {k: {c: round(v, 1) for c, v in d.items()} for k, d in figures.items()},
        "kernel_over_direct": {
            c: round(figures["kernel"][c] / figures["direct"][c], 3) for c in figures["direct"]
        },
    }
    print(f"{'tokens/s':<28}{'1 at a time':>14}{f'{SLOTS} at once':>14}")
    for label, key in (("llama-server directly", "direct"), ("through kernos", "kernel")):
        row = figures[key]
        print(f"{label:<28}{row['1']:>14.1f}{row[str(SLOTS)]:>14.1f}")
    write_results("llm_throughput", result)


if __name__ == "__main__":
    run_benchmark(main)
