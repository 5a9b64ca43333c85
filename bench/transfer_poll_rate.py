"""The 46 ms floor: Temporal's history.transferProcessorMaxPollRPS at its default and at 1000.

A bare workflow calls a no-op activity 10 times, on its own worker's queue (eager dispatch) and
on a separate worker's queue, with runs 1 s apart and back to back; once on a dev server with
the default of 20 transfer-queue loads a second, once with the 1000 that kernos sets.
Run: `python bench/transfer_poll_rate.py` (writes bench/results/transfer_poll_rate.json).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from bench_results import run_benchmark, write_results
from bench_workloads import RawLoop, raw_noop
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from kernos.infra.temporal_dev import DYNAMIC_CONFIG, TemporalDevServer
from kernos.workflows.agent_worker import sandbox_runner

SETTING = "history.transferProcessorMaxPollRPS=1000"
CALLS = 10
RUNS = 5


async def measure(kernos_config: bool) -> dict[str, float]:
    """ms per activity cycle for each queue shape and pause, on a fresh dev server."""
    config = [v for v in DYNAMIC_CONFIG if kernos_config or v != SETTING]
    server = await TemporalDevServer.start(headless=True, dynamic_config=config)
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        workers = [
            Worker(client, task_queue="wf", workflows=[RawLoop], activities=[raw_noop],
                   workflow_runner=sandbox_runner()),
            Worker(client, task_queue="act", activities=[raw_noop]),
        ]  # fmt: skip
        polling = [asyncio.create_task(worker.run()) for worker in workers]

        async def run(queue: str | None) -> float:
            started = time.perf_counter()
            await client.execute_workflow(
                "RawLoop", args=[CALLS, queue], id=uuid.uuid4().hex, task_queue="wf"
            )
            return (time.perf_counter() - started) / CALLS * 1000

        await run(None)
        figures = {}
        for label, queue in (("same_queue", None), ("separate_queue", "act")):
            for pause_label, pause in (("paused", 1.0), ("back_to_back", 0.0)):
                samples = []
                for _ in range(RUNS):
                    await asyncio.sleep(pause)
                    samples.append(await run(queue))
                figures[f"{label}_{pause_label}_ms"] = round(statistics.median(samples), 1)
        for worker in workers:
            await worker.shutdown()
        await asyncio.gather(*polling)
        return figures
    finally:
        server.stop()


async def main() -> None:
    result = {"default_20": await measure(False), "kernos_1000": await measure(True)}
    print(f"{'ms per activity cycle':<32}{'default (20/s)':>16}{'1000/s':>10}")
    for key in result["default_20"]:
        print(f"{key:<32}{result['default_20'][key]:>16}{result['kernos_1000'][key]:>10}")
    write_results("transfer_poll_rate", result)


if __name__ == "__main__":
    run_benchmark(main)
