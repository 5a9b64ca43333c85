"""Hundreds to thousands of concurrent runs against a backend of fixed capacity.

250, 500, 1000 and 2000 one-call runs (24-token answers) are submitted at once to two
simulated instances of 4 slots each, whose capacity (about 11 runs/s) is below what the kernel
can carry here, so the backlog waits in the model's queue, as it would in front of real GPUs.
Throughput is output tokens/s from the first submission to the last run's end. The latency the
kernel adds to a run is its turnaround in the kernel's record (admission to the recorded
outcome) minus the time its call waited in the model's queue (Temporal's scheduled-to-started)
minus the server's own time for it: starting the workflow, the workflow tasks, the access check
and audit, and recording the outcome.
Run: `python bench/scaling.py` (writes bench/results/scaling.json).
"""

from __future__ import annotations

import asyncio
import os
import platform

from bench_results import run_benchmark, write_results
from bench_stack import Services, kernel, services
from simulator import percentile, simulated_server

from kernos import KernosClient, RunSpec

SCALES = (250, 500, 1000, 2000)
SLOTS = 4
TOKENS = 24
BACKEND = {"step_s": 0.02, "step_per_request_s": 0.0025, "prefill_per_token_s": 0.0}


async def queue_wait_s(client: KernosClient, run_id: str) -> float:
    """How long the run's LLM call waited to be picked up (scheduled to started)."""
    history = await client.temporal.get_workflow_handle(run_id).fetch_history()
    scheduled = started = None
    scheduled_id = 0
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "llm.chat":
                scheduled = event.event_time.ToDatetime()
                scheduled_id = event.event_id
        elif (
            event.HasField("activity_task_started_event_attributes")
            and scheduled is not None
            and event.activity_task_started_event_attributes.scheduled_event_id == scheduled_id
        ):
            started = event.event_time.ToDatetime()
    assert scheduled is not None and started is not None
    return (started - scheduled).total_seconds()


async def one_scale(stack: Services, agents: int) -> dict[str, float]:
    async with (
        simulated_server(max_running_requests=SLOTS, **BACKEND) as a,
        simulated_server(max_running_requests=SLOTS, **BACKEND) as b,
    ):
        settings = stack.settings(
            llm=[
                {"name": name, "kind": "sglang", "model": "sim", "base_url": s.base_url,
                 "slots": SLOTS}
                for name, s in (("a", a), ("b", b))
            ],
            default_model="sim",
        )  # fmt: skip
        async with kernel(settings) as client:
            handles = await asyncio.gather(
                *(
                    client.submit(RunSpec(agent="sized", task=f"{TOKENS} run {i}"))
                    for i in range(agents)
                )
            )
            await asyncio.gather(*(handle.result() for handle in handles))
            records = [await client.runs.get(handle.run_id) for handle in handles]
            first = min(r.created_at for r in records)
            last = max(r.finished_at for r in records if r.finished_at is not None)
            elapsed = (last - first).total_seconds()
            turnaround = {
                r.run_id: (r.finished_at - r.created_at).total_seconds()
                for r in records
                if r.finished_at is not None
            }
            waits = dict(
                zip(
                    turnaround,
                    await asyncio.gather(*(queue_wait_s(client, run) for run in turnaround)),
                    strict=True,
                )
            )
        # The server's request id begins with the run id (the workflow id).
        width = len(next(iter(turnaround)))
        served = {r.rid[:width]: r for s in (a, b) for r in s.requests}
    added = []
    for run_id, total in turnaround.items():
        request = served[run_id]
        assert request.finished is not None
        added.append(total - waits[run_id] - (request.finished - request.received))
    return {
        "agents": agents,
        "throughput": round(agents * TOKENS / elapsed, 1),
        "kernel_added_p50_ms": round(percentile(added, 50) * 1000, 1),
        "kernel_added_p99_ms": round(percentile(added, 99) * 1000, 1),
        "seconds": round(elapsed, 2),
    }


async def main() -> None:
    async with services() as stack:
        rows = [await one_scale(stack, agents) for agents in SCALES]
    growth = rows[-1]["kernel_added_p99_ms"] / rows[0]["kernel_added_p99_ms"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "backend": f"2 simulated SGLang instances x {SLOTS} slots, {BACKEND}",
        "rows": rows,
        "p99_growth_250_to_2000": round(growth, 2),
    }
    print(f"{'runs':>6}{'tokens/s':>10}{'added p50 ms':>14}{'added p99 ms':>14}{'seconds':>9}")
    for row in rows:
        print(f"{row['agents']:>6}{row['throughput']:>10.1f}{row['kernel_added_p50_ms']:>14.1f}"
              f"{row['kernel_added_p99_ms']:>14.1f}{row['seconds']:>9.1f}")  # fmt: skip
    print(f"kernel-added p99 grows {growth:.2f}x from 250 to 2000 runs (goal <= 2)")
    write_results("scaling", result)


if __name__ == "__main__":
    run_benchmark(main)
