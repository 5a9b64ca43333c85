"""Output tokens/s on the simulated backend, straight from clients and through the kernel.

Two simulated SGLang instances (bench/simulator.py, calibrated to this machine's llama.cpp
server) of 8 slots each. At saturation, 16 clients each ask for 64-token answers in a loop,
first directly (naive clients: round-robin instances, retrying 503/429), then as one kernel run
per request (admission, workflow, access check, audit, the llm.chat activity pulled by each
instance's worker with its 8 slots). Under 4x overload, 64 clients at once, against servers that
queue at most 8 requests each (SGLang's `--max-queued-requests`) and clients that give up after
20 s: direct requests are refused and retried until they time out; kernel runs wait in Temporal's
queue. Run: `python bench/throughput.py` (writes bench/results/throughput.json).
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable

from bench_results import run_benchmark, write_results
from bench_stack import Services, kernel, services
from simulator import NaiveClients, Outcome, constants, percentile, simulated_server

from kernos import KernosClient, RunSpec
from kernos.kernel.syscalls import LLMRequest

SLOTS = 8
TOKENS = 64
SATURATION_CLIENTS = 2 * SLOTS
ROUNDS = 4
OVERLOAD_CLIENTS = 4 * 2 * SLOTS
CLIENT_TIMEOUT_S = 20.0
REQUEST = LLMRequest.model_validate(
    {"model": "sim", "messages": [{"role": "user", "content": "go"}],
     "sampling": {"max_tokens": TOKENS}},
)  # fmt: skip


async def closed_loop(
    clients: int, rounds: int, one: Callable[[], Awaitable[Outcome]]
) -> tuple[float, list[Outcome]]:
    """`clients` loops of `rounds` requests each; (elapsed seconds, outcomes)."""

    async def loop() -> list[Outcome]:
        return [await one() for _ in range(rounds)]

    started = time.perf_counter()
    outcomes = [
        o for batch in await asyncio.gather(*(loop() for _ in range(clients))) for o in batch
    ]
    return time.perf_counter() - started, outcomes


async def through_kernel(client: KernosClient) -> Outcome:
    """One run of one 64-token syscall, submission to result."""
    started = time.perf_counter()
    handle = await client.submit(RunSpec(agent="sized", task=f"{TOKENS} go", model="sim"))
    result = await handle.result()
    return Outcome(time.perf_counter() - started, int(result.output))


def summary(elapsed: float, outcomes: list[Outcome]) -> dict[str, float]:
    """Tokens/s, failures and latency percentiles of a phase."""
    done = [o for o in outcomes if o.failed is None]
    latencies = [o.latency_s for o in done]
    return {
        "tokens_per_s": round(sum(o.output_tokens for o in done) / elapsed, 1),
        "requests": len(outcomes),
        "failed": len(outcomes) - len(done),
        "p50_s": round(percentile(latencies, 50), 2),
        "p99_s": round(percentile(latencies, 99), 2),
    }


async def phase(
    stack: Services, clients: int, rounds: int, max_queued: int | None
) -> dict[str, dict[str, float]]:
    """Direct and kernel figures for one load, on fresh simulated instances each."""
    figures = {}
    async with (
        simulated_server(max_queued_requests=max_queued) as a,
        simulated_server(max_queued_requests=max_queued) as b,
    ):
        naive = NaiveClients([a.base_url, b.base_url], timeout_s=CLIENT_TIMEOUT_S)
        figures["direct"] = summary(
            *await closed_loop(clients, rounds, lambda: naive.request(REQUEST))
        )
        await naive.aclose()
    async with (
        simulated_server(max_queued_requests=max_queued) as a,
        simulated_server(max_queued_requests=max_queued) as b,
    ):
        settings = stack.settings(
            llm=[
                {
                    "name": f"sim{i}",
                    "kind": "sglang",
                    "model": "sim",
                    "base_url": url,
                    "slots": SLOTS,
                }
                for i, url in enumerate((a.base_url, b.base_url))
            ],
            default_model="sim",
        )
        async with kernel(settings) as client:
            await through_kernel(client)  # warm the workers
            figures["kernel"] = summary(
                *await closed_loop(clients, rounds, lambda: through_kernel(client))
            )
    return figures


async def main() -> None:
    async with services() as stack:
        saturation = await phase(stack, SATURATION_CLIENTS, ROUNDS, None)
        overload = await phase(stack, OVERLOAD_CLIENTS, 2, SLOTS)
    ratio = saturation["kernel"]["tokens_per_s"] / saturation["direct"]["tokens_per_s"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "backend": f"2 simulated SGLang instances x {SLOTS} slots, {constants()}",
        "saturation": saturation | {"clients": SATURATION_CLIENTS, "tokens": TOKENS},
        "ratio": round(ratio, 3),
        "overload_4x": overload
        | {
            "clients": OVERLOAD_CLIENTS,
            "max_queued_per_instance": SLOTS,
            "client_timeout_s": CLIENT_TIMEOUT_S,
        },
    }
    print(f"{'':<26}{'tokens/s':>10}{'failed':>8}{'p50 s':>8}{'p99 s':>8}")
    for label, figures in (("saturation", saturation), ("4x overload", overload)):
        for way in ("direct", "kernel"):
            f = figures[way]
            print(
                f"{label + ', ' + way:<26}{f['tokens_per_s']:>10.1f}{f['failed']:>8.0f}"
                f"{f['p50_s']:>8.2f}{f['p99_s']:>8.2f}"
            )
    print(f"kernel / direct at saturation: {ratio:.3f} (goal >= 0.95)")
    write_results("throughput", result)


if __name__ == "__main__":
    run_benchmark(main)
