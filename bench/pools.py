"""What pools cost and how well they keep tenants apart, on the embedded stack.

- cold start: a one-syscall run in a tenant whose pool has no process yet (it takes the spare,
  imports the agent in its sandbox) against the same run in a tenant whose pool is warm,
  interleaved, p50 and p99 of the difference;
- memory per idle pool: what each pool's process uses once its run is done (its cgroup's
  count, as root);
- a hostile neighbour: an honest tenant's 20 runs of 10 no-op syscalls at once, wall time and
  per-run p99, alone and while another tenant's two runs burn CPU in workflow code (1.5 s
  turns, under the SDK's deadlock timeout), in pools with equal CPU shares.

Run: `python bench/pools.py` (writes bench/results/pools.json). As root for cgroups.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

from bench_results import run_benchmark, write_results
from bench_stack import services
from bench_workloads import NoopBackend

from kernos import KernosClient, RunSpec
from kernos.client import connect_temporal
from kernos.worker import RunningWorkers, WorkerGroup
from kernos.workflows.pool import PoolRunner

COLD_STARTS = 12
HONEST_RUNS = 20
HONEST_SYSCALLS = 10
REPEATS = 3


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def one_run(client: KernosClient, tenant: str, syscalls: int = 1) -> float:
    started = time.perf_counter()
    handle = await client.submit(RunSpec(agent="loop", task=str(syscalls), tenant=tenant))
    await handle.result()
    return (time.perf_counter() - started) * 1000


async def cold_starts(client: KernosClient) -> dict[str, float]:
    warm_tenant = f"warm-{uuid.uuid4().hex[:6]}"
    await one_run(client, warm_tenant)
    extra = []
    for _ in range(COLD_STARTS):
        await asyncio.sleep(1.5)  # the next spare is started and ready, as on an idle host
        cold = await one_run(client, f"cold-{uuid.uuid4().hex[:6]}")
        await asyncio.sleep(0.5)
        warm = await one_run(client, warm_tenant)
        extra.append(cold - warm)
    return {
        "extra_ms_p50": round(statistics.median(extra), 1),
        "extra_ms_p99": round(percentile(extra, 0.99), 1),
    }


async def honest_burst(client: KernosClient, tenant: str) -> tuple[float, float]:
    """Wall time of the burst, and the p99 of its runs, in ms."""
    started = time.perf_counter()
    each = await asyncio.gather(
        *(one_run(client, tenant, HONEST_SYSCALLS) for _ in range(HONEST_RUNS))
    )
    return (time.perf_counter() - started) * 1000, percentile(list(each), 0.99)


async def neighbour(client: KernosClient) -> dict[str, float]:
    honest = f"honest-{uuid.uuid4().hex[:6]}"
    await one_run(client, honest)
    alone, crowded = [], []
    for _ in range(REPEATS):
        alone.append(await honest_burst(client, honest))
        greedy = f"greedy-{uuid.uuid4().hex[:6]}"
        burners = [
            await client.submit(RunSpec(agent="burner", task="8", tenant=greedy)) for _ in range(2)
        ]
        await asyncio.sleep(2.0)  # the burners are burning
        crowded.append(await honest_burst(client, honest))
        for burner in burners:
            await burner.result()
    wall = statistics.median(c[0] for c in crowded) / statistics.median(a[0] for a in alone)
    p99 = statistics.median(c[1] for c in crowded) / statistics.median(a[1] for a in alone)
    return {
        "alone_wall_ms": round(statistics.median(a[0] for a in alone), 1),
        "crowded_wall_ms": round(statistics.median(c[0] for c in crowded), 1),
        "wall_ratio": round(wall, 3),
        "alone_p99_ms": round(statistics.median(a[1] for a in alone), 1),
        "crowded_p99_ms": round(statistics.median(c[1] for c in crowded), 1),
        "p99_ratio": round(p99, 3),
    }


def idle_memory(pools: PoolRunner) -> dict[str, float] | None:
    counted = [p.memory_bytes for p in pools.status().pools if p.memory_bytes]
    if not counted:
        return None
    mib = [value / 2**20 for value in counted]
    return {
        "pools": len(mib),
        "mib_p50": round(statistics.median(mib), 1),
        "mib_max": round(max(mib), 1),
    }


async def main() -> None:
    async with services() as running:
        settings = running.settings(
            llm=[{"name": "noop", "kind": "scripted", "model": "noop", "slots": 64}],
            default_model="noop",
            agents={"loop": "bench_workloads:LoopAgent", "burner": "bench_workloads:BurnerAgent"},
        )
        group = await WorkerGroup.create(
            await connect_temporal(settings), settings, backends={"noop": NoopBackend()}
        )
        async with RunningWorkers(group), await KernosClient.connect(settings) as client:
            assert group.pools is not None and group.pools.how.confined, "bubblewrap is needed"
            cold = await cold_starts(client)
            memory = idle_memory(group.pools)
            crowd = await neighbour(client)
    result = {"cold_start": cold, "idle_pool_memory": memory, "hostile_neighbour": crowd}
    print(
        f"cold start: +{cold['extra_ms_p50']} ms p50, +{cold['extra_ms_p99']} ms p99 "
        "over a warm pool"
    )
    if memory:
        print(
            f"idle pool: {memory['mib_p50']} MiB p50 (max {memory['mib_max']}) "
            f"over {memory['pools']} pools"
        )
    print(
        f"honest burst ({HONEST_RUNS} runs x {HONEST_SYSCALLS} syscalls): "
        f"{crowd['alone_wall_ms']} ms alone, {crowd['crowded_wall_ms']} ms next to a burner "
        f"({crowd['wall_ratio']}x); p99 per run {crowd['alone_p99_ms']} -> "
        f"{crowd['crowded_p99_ms']} ms ({crowd['p99_ratio']}x; goal <= 1.2x)"
    )
    write_results("pools", result)


if __name__ == "__main__":
    run_benchmark(main)
