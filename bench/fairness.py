"""Two tenants offering 10:1 load to one model, under each scheduling policy.

One simulated instance (4 slots) serves 32-token answers. The heavy tenant submits ten runs for
each of the light tenant's, interleaved, all at once, so both are backlogged. Fairness is judged
in tokens: Jain's index over the tenants' token shares (equal weights) while both still have
work waiting, i.e. until the light tenant's last run completes; 1.0 is an even split, 0.6 the
10:1 of arrival order. The table gives each tenant's turnaround (submission to result) per
policy; under `priority` the light tenant's runs have priority 2 and the heavy tenant's 4.
Run: `python bench/fairness.py` (writes bench/results/fairness.json).
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import time

from bench_results import run_benchmark, write_results
from bench_stack import Services, kernel, services
from simulator import constants, percentile, simulated_server

from kernos import RunSpec

SLOTS = 4
TOKENS = 32
LIGHT_RUNS = 12
RATIO = 10
POLICIES = ("fifo", "rr", "priority", "fair")


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1.0 when all are equal, 1/n when one has everything."""
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


async def one_policy(stack: Services, policy: str) -> dict[str, object]:
    """Submit the interleaved backlog under `policy`; turnaround and token shares."""
    async with simulated_server(max_running_requests=SLOTS) as server:
        settings = stack.settings(
            llm=[
                {
                    "name": "sim",
                    "kind": "sglang",
                    "model": "sim",
                    "base_url": server.base_url,
                    "slots": SLOTS,
                }
            ],
            scheduler={"policy": policy, "slice_tokens": 8},
        )
        async with kernel(settings) as client:
            order = [("light" if i % (RATIO + 1) == RATIO else "heavy") for i in
                     range(LIGHT_RUNS * (RATIO + 1))]  # fmt: skip
            started = time.perf_counter()
            finished: list[tuple[str, float, int]] = []

            async def one(tenant: str, index: int) -> None:
                priority = (2 if tenant == "light" else 4) if policy == "priority" else 3
                handle = await client.submit(
                    RunSpec(agent="sized", task=f"{TOKENS} {tenant} {index}", tenant=tenant,
                            priority=priority, model="sim")
                )  # fmt: skip
                result = await handle.result()
                finished.append((tenant, time.perf_counter() - started, int(result.output)))

            await asyncio.gather(*(one(tenant, i) for i, tenant in enumerate(order)))
    light_done = max(t for tenant, t, _ in finished if tenant == "light")
    served = {
        tenant: sum(tok for who, t, tok in finished if who == tenant and t <= light_done)
        for tenant in ("heavy", "light")
    }
    turnaround = {
        tenant: {
            "mean_s": round(statistics.mean(t for who, t, _ in finished if who == tenant), 2),
            "p99_s": round(percentile([t for who, t, _ in finished if who == tenant], 99), 2),
        }
        for tenant in ("heavy", "light")
    }
    return {
        "jain": round(jain(list(served.values())), 3),
        "tokens_while_both_waiting": served,
        "turnaround": turnaround,
    }


async def main() -> None:
    async with services() as stack:
        table = {policy: await one_policy(stack, policy) for policy in POLICIES}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "backend": f"1 simulated SGLang instance x {SLOTS} slots, {constants()}",
        "load": f"{LIGHT_RUNS * RATIO} heavy and {LIGHT_RUNS} light runs of {TOKENS} tokens",
        "jain": table["fair"]["jain"],
        "policies": table,
    }
    print(f"{'policy':<10}{'jain':>6}{'heavy mean':>12}{'heavy p99':>11}{'light mean':>12}"
          f"{'light p99':>11}")  # fmt: skip
    for policy, row in table.items():
        t = row["turnaround"]
        assert isinstance(t, dict)
        print(
            f"{policy:<10}{row['jain']:>6.3f}{t['heavy']['mean_s']:>12.2f}"
            f"{t['heavy']['p99_s']:>11.2f}{t['light']['mean_s']:>12.2f}{t['light']['p99_s']:>11.2f}"
        )
    print(f"Jain's index under fair: {table['fair']['jain']} (goal >= 0.95)")
    write_results("fairness", result)


if __name__ == "__main__":
    run_benchmark(main)
