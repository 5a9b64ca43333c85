"""Hundreds to thousands of concurrent runs against a backend of fixed capacity.

250, 500, 1000 and 2000 runs of two LLM calls each (12-token answers) are submitted at once to
two simulated instances of 4 slots each, whose capacity (about 11 runs/s) is below what the
kernel can carry here, so the backlog waits in the model's queue, as it would in front of real
GPUs. Throughput is output tokens/s from the first admission to the last recorded outcome.

The latency the kernel adds to a run, queue wait excluded, is the time from its first call's
scheduling to its recorded outcome, minus each call's wait in the model's queue (Temporal's
scheduled-to-started) and the server's own time for it: the activities' dispatch, the access
checks and audit commits, the workflow task between the calls, and recording the outcome.
Admission (the record, the workflow's start and first task) is reported apart: with every run
submitted in the same instant it measures how fast the kernel absorbs the burst.
Each scale runs twice, side by side: agent code in its pool's confined child (bubblewrap, as
kernos runs it) and in the agent worker's own process (`[isolation] mode = "in_process"`), so
`confined_throughput_ratio` and `confined_added_p50_ms` say what confinement costs.
Run: `python bench/scaling.py [RUNS ...]` (writes bench/results/scaling.json).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench_results import run_benchmark, write_results
from bench_stack import Services, kernel, services
from simulator import percentile, simulated_server

from kernos import KernosClient, RunSpec

SCALES = [250, 500, 1000, 2000]
SLOTS = 4
CALLS = 2
TOKENS = 12
BACKEND = {"step_s": 0.02, "step_per_request_s": 0.0025, "prefill_per_token_s": 0.0}


@dataclass
class Calls:
    """A run's LLM calls as its history has them."""

    first_scheduled: datetime
    waits_s: float
    """Scheduled-to-started, summed over the calls."""


async def calls_of(client: KernosClient, run_id: str) -> Calls:
    """When the run's first LLM call was scheduled, and how long its calls waited in queue."""
    history = await client.temporal.get_workflow_handle(run_id).fetch_history()
    scheduled: dict[int, datetime] = {}
    waits = 0.0
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            if event.activity_task_scheduled_event_attributes.activity_type.name == "llm.chat":
                scheduled[event.event_id] = event.event_time.ToDatetime(tzinfo=UTC)
        elif event.HasField("activity_task_started_event_attributes"):
            of = event.activity_task_started_event_attributes.scheduled_event_id
            if of in scheduled:
                waits += (event.event_time.ToDatetime(tzinfo=UTC) - scheduled[of]).total_seconds()
    return Calls(first_scheduled=min(scheduled.values()), waits_s=waits)


async def one_scale(stack: Services, agents: int, mode: str) -> dict[str, Any]:
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
            isolation={"mode": mode},
        )  # fmt: skip
        async with kernel(settings) as client:
            handles = await asyncio.gather(
                *(
                    client.submit(RunSpec(agent="calls", task=f"{CALLS} {TOKENS}"))
                    for _ in range(agents)
                )
            )
            await asyncio.gather(*(handle.result() for handle in handles))
            records = [await client.runs.get(handle.run_id) for handle in handles]
            calls = await asyncio.gather(*(calls_of(client, r.run_id) for r in records))
    # The server's request id begins with the run id (the workflow id).
    server_s: dict[str, float] = defaultdict(float)
    for request in (r for s in (a, b) for r in s.requests):
        assert request.finished is not None
        server_s[request.rid[: len(records[0].run_id)]] += request.finished - request.received
    added, admission = [], []
    for record, run_calls in zip(records, calls, strict=True):
        assert record.finished_at is not None
        end_to_end = (record.finished_at - run_calls.first_scheduled).total_seconds()
        added.append(end_to_end - run_calls.waits_s - server_s[record.run_id])
        admission.append((run_calls.first_scheduled - record.created_at).total_seconds())
    first = min(r.created_at for r in records)
    last = max(r.finished_at for r in records if r.finished_at is not None)
    elapsed = (last - first).total_seconds()
    return {
        "agents": agents,
        "isolation": mode,
        "throughput": round(agents * CALLS * TOKENS / elapsed, 1),
        "kernel_added_p50_ms": round(percentile(added, 50) * 1000, 1),
        "kernel_added_p99_ms": round(percentile(added, 99) * 1000, 1),
        "admission_p50_ms": round(percentile(admission, 50) * 1000, 1),
        "admission_p99_ms": round(percentile(admission, 99) * 1000, 1),
        "seconds": round(elapsed, 2),
    }


async def main() -> None:
    scales = [int(arg) for arg in sys.argv[1:]] or SCALES
    async with services() as stack:
        rows, unconfined = [], []
        for agents in scales:
            rows.append(await one_scale(stack, agents, "bwrap"))
            unconfined.append(await one_scale(stack, agents, "in_process"))
    growth = rows[-1]["kernel_added_p99_ms"] / rows[0]["kernel_added_p99_ms"]
    confinement = [
        {
            "agents": row["agents"],
            "confined_throughput_ratio": round(row["throughput"] / other["throughput"], 3),
            "confined_added_p50_ms": round(
                row["kernel_added_p50_ms"] - other["kernel_added_p50_ms"], 1
            ),
        }
        for row, other in zip(rows, unconfined, strict=True)
    ]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "backend": f"2 simulated SGLang instances x {SLOTS} slots, {BACKEND}",
        "rows": rows,
        "in_process_rows": unconfined,
        "confinement": confinement,
        "p99_growth": round(growth, 2),
        "p99_growth_between": [scales[0], scales[-1]],
    }
    print(f"{'isolation':<11}{'runs':>6}{'tokens/s':>10}{'added p50 ms':>14}{'added p99 ms':>14}"
          f"{'admission p50':>15}{'admission p99':>15}{'seconds':>9}")  # fmt: skip
    for row in [row for pair in zip(rows, unconfined, strict=True) for row in pair]:
        print(f"{row['isolation'][:10]:<11}{row['agents']:>6}{row['throughput']:>10.1f}{row['kernel_added_p50_ms']:>14.1f}"
              f"{row['kernel_added_p99_ms']:>14.1f}{row['admission_p50_ms']:>15.1f}"
              f"{row['admission_p99_ms']:>15.1f}{row['seconds']:>9.1f}")  # fmt: skip
    print(f"kernel-added p99 grows {growth:.2f}x from {scales[0]} to {scales[-1]} runs (goal <= 2)")
    for each in confinement:
        print(
            f"confined, {each['agents']} runs: {each['confined_throughput_ratio']:.3f}x the "
            f"throughput in process, {each['confined_added_p50_ms']:+.1f} ms added p50 "
            "(goal: >= 0.9x, <= +2 ms)"
        )
    write_results("scaling", result)


if __name__ == "__main__":
    run_benchmark(main)
