"""The seed's experiment: many multi-turn agents on two LLM instances, with and without kernos.

Each agent is ReAct-shaped: a shared system prompt, its question, then turns of a 32-token
thought and a ~150-word tool observation, every call sending the whole growing conversation.
Without the kernel, each agent calls the servers itself, picking instances round-robin (so a
turn rarely finds its prefix cached where it lands) and retrying 503/429. Through the kernel,
each agent is a run; its calls are pulled by the instances' workers within their slots, and
cache affinity (`[scheduler] affinity_s`) sends a run's next call to the instance holding its
prefix. A second setting gives the two instances 8 and 2 slots, where round-robin clients
overload the small one and pulling by capacity does not. Both ways use the same simulated
instances (bench/simulator.py, calibrated to this machine's llama.cpp server; prefill of
uncached prompt tokens is what a cache miss costs).
The servers' prefix caches hold everything by default. `--kv-pool N [N ...]` bounds each
instance's cache to N tokens (a KV pool that fills, least recently used prefixes evicted, as
SGLang's radix cache does) and runs direct, the kernel without and with affinity at each size.
Run: `python bench/agents_vs_direct.py` (writes bench/results/agents_vs_direct.json);
`python bench/agents_vs_direct.py --affinity 1 5 30` runs only the kernel, once per
`affinity_s`, and prints the rows; `--kv-pool 18000 9000` prints the pool sweep, and
`--instances 2 4 8` the same 16 slots split over that many instances (the README's).
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bench_results import run_benchmark, write_results
from bench_stack import Services, kernel, services
from bench_workloads import REACT_REPLY_TOKENS, REACT_SYSTEM, observation
from simulator import NaiveClients, constants, simulated_server

from kernos import RunSpec
from kernos.kernel.syscalls import LLMRequest

AGENTS = 32
TURNS = 6
SLOTS = 8
EQUAL = (SLOTS, SLOTS)
#: Long enough to cover one generation at saturation (about 2 s here): a shorter wait sends calls
#: to the back of the pool just before their instance frees a slot (the `--affinity` sweep).
AFFINITY_S = 5.0
#: A second setting: instances of unequal capacity (a big and a small GPU, say).
UNEQUAL = (8, 2)


async def direct_agent(clients: NaiveClients, index: int) -> int:
    """One agent calling the servers itself; its output tokens."""
    messages: list[dict[str, str]] = [
        {"role": "system", "content": REACT_SYSTEM},
        {"role": "user", "content": f"question {index}"},
    ]
    tokens = 0
    for turn in range(TURNS):
        request = LLMRequest.model_validate(
            {"model": "sim", "messages": messages, "sampling": {"max_tokens": REACT_REPLY_TOKENS}}
        )
        outcome = await clients.request(request)
        if outcome.failed:
            raise RuntimeError(f"agent {index} failed: {outcome.failed}")
        tokens += outcome.output_tokens
        messages += [
            {"role": "assistant", "content": outcome.text},
            {"role": "user", "content": observation(turn)},
        ]
    return tokens


def measured(elapsed: float, tokens: int, servers: list[Any]) -> dict[str, float]:
    """One way's figures: its time, output rate, the share of prompt tokens the servers took
    from their prefix caches, and the prompt tokens each instance got on average."""
    prompt = sum(s.prompt_tokens for s in servers)
    cached = sum(s.cached_prompt_tokens for s in servers)
    return {
        "seconds": round(elapsed, 2),
        "tokens_per_s": round(tokens / elapsed, 1),
        "cache_hit_rate": round(cached / prompt if prompt else 0.0, 3),
        "prompt_tokens_per_instance": round(prompt / len(servers)),
    }


def print_row(label: str, f: dict[str, float]) -> None:
    """One way's figures as a line."""
    print(
        f"{label:<36}{f['seconds']:>8.2f} s {f['tokens_per_s']:>7.1f} tokens/s "
        f"{f['cache_hit_rate']:>7.1%} cache hits {f['prompt_tokens_per_instance']:>8,} "
        "prompt tokens per instance",
        flush=True,
    )


@asynccontextmanager
async def instances(slots: Sequence[int], kv_pool: int | None) -> AsyncIterator[list[Any]]:
    """Simulated servers of the given slots, each with its own KV pool."""
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                simulated_server(max_running_requests=n, cache_tokens=kv_pool)
            )
            for n in slots
        ]


async def direct(slots: Sequence[int] = EQUAL, kv_pool: int | None = None) -> dict[str, float]:
    async with instances(slots, kv_pool) as servers:
        clients = NaiveClients([server.base_url for server in servers], timeout_s=600)
        started = time.perf_counter()
        tokens = sum(await asyncio.gather(*(direct_agent(clients, i) for i in range(AGENTS))))
        elapsed = time.perf_counter() - started
        await clients.aclose()
    return measured(elapsed, tokens, servers)


async def through_kernel(
    stack: Services,
    affinity_s: float,
    slots: Sequence[int] = EQUAL,
    kv_pool: int | None = None,
) -> dict[str, float]:
    async with instances(slots, kv_pool) as servers:
        settings = stack.settings(
            llm=[
                {
                    "name": f"sim{i}",
                    "kind": "sglang",
                    "model": "sim",
                    "base_url": server.base_url,
                    "slots": n,
                }
                for i, (server, n) in enumerate(zip(servers, slots, strict=True))
            ],
            default_model="sim",
            scheduler={"affinity_s": affinity_s},
        )
        async with kernel(settings) as client:
            started = time.perf_counter()
            handles = [
                await client.submit(RunSpec(agent="react", task=f"{TURNS} question {i}"))
                for i in range(AGENTS)
            ]
            tokens = sum([int((await handle.result()).output) for handle in handles])
            elapsed = time.perf_counter() - started
    return measured(elapsed, tokens, servers)


async def sweep(values: list[float]) -> None:
    """The kernel alone at each `affinity_s`, on the equal instances; printed only."""
    async with services() as stack:
        for affinity_s in values:
            print_row(f"affinity_s {affinity_s:g}", await through_kernel(stack, affinity_s))


async def pool_sweep(sizes: list[int]) -> None:
    """Direct, and the kernel without and with affinity, at each KV pool size; printed only."""
    async with services() as stack:
        for size in sizes:
            rows = {
                "direct": await direct(kv_pool=size),
                "kernel, no affinity": await through_kernel(stack, 0.0, kv_pool=size),
                f"kernel, affinity {AFFINITY_S:g} s": await through_kernel(
                    stack, AFFINITY_S, kv_pool=size
                ),
            }
            for label, f in rows.items():
                print_row(f"pool {size}: {label}", f)


async def instance_sweep(counts: list[int]) -> None:
    """Direct and the kernel (with affinity) on the same 16 slots split over more instances."""
    async with services() as stack:
        for count in counts:
            slots = [SLOTS * 2 // count] * count
            rows = {
                "direct": await direct(slots),
                f"kernel, affinity {AFFINITY_S:g} s": await through_kernel(
                    stack, AFFINITY_S, slots
                ),
            }
            for label, f in rows.items():
                print_row(f"{count} x {slots[0]} slots: {label}", f)
            ratio = (
                rows[f"kernel, affinity {AFFINITY_S:g} s"]["tokens_per_s"]
                / rows["direct"]["tokens_per_s"]
            )
            print(f"{count} x {slots[0]} slots kernel / direct: {ratio:.3f}", flush=True)


async def main() -> None:
    if sys.argv[1:2] == ["--affinity"]:
        await sweep([float(value) for value in sys.argv[2:]])
        return
    if sys.argv[1:2] == ["--kv-pool"]:
        await pool_sweep([int(value) for value in sys.argv[2:]])
        return
    if sys.argv[1:2] == ["--instances"]:
        await instance_sweep([int(value) for value in sys.argv[2:]])
        return
    async with services() as stack:
        figures = {
            "direct": await direct(),
            "kernel_without_affinity": await through_kernel(stack, 0.0),
            "kernel": await through_kernel(stack, AFFINITY_S),
        }
        unequal = {
            "direct": await direct(UNEQUAL),
            "kernel": await through_kernel(stack, AFFINITY_S, UNEQUAL),
        }
    ratio = figures["kernel"]["tokens_per_s"] / figures["direct"]["tokens_per_s"]
    unequal_ratio = unequal["kernel"]["tokens_per_s"] / unequal["direct"]["tokens_per_s"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "backend": f"2 simulated SGLang instances x {SLOTS} slots, {constants()}",
        "workload": f"{AGENTS} agents x {TURNS} turns of {REACT_REPLY_TOKENS} tokens, "
        "~150-word observations",
        "affinity_s": AFFINITY_S,
        **figures,
        "ratio": round(ratio, 3),
        "unequal_instances": unequal | {"slots": list(UNEQUAL), "ratio": round(unequal_ratio, 3)},
    }
    for label, key in (("agents call servers", "direct"),
                       ("kernos, no affinity", "kernel_without_affinity"),
                       ("kernos", "kernel")):  # fmt: skip
        print_row(label, figures[key])
    for label, key in (("unequal: agents call servers", "direct"), ("unequal: kernos", "kernel")):
        print_row(label, unequal[key])
    print(f"kernel / direct throughput: {ratio:.3f} (goal >= 1.5); with instances of "
          f"{UNEQUAL[0]} and {UNEQUAL[1]} slots: {unequal_ratio:.3f}")  # fmt: skip
    write_results("agents_vs_direct", result)


if __name__ == "__main__":
    run_benchmark(main)
