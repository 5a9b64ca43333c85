"""What the dev server's search-attribute cache saves: kernos's setting against start-dev's own.

`temporal server start-dev` reads the search attributes from its store at every use unless
`system.forceSearchAttributesCacheRefreshOnRead` is set off, which kernos does. Bare workflows
started with kernos's three attributes, each setting its status once (what a run does with
them), 32 at once; one long-running server for each setting, started side by side, their
rounds alternated (each server's own CPU read from /proc).
Run: `python bench/search_attribute_cache.py` (writes bench/results/search_attribute_cache.json).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path

from bench_results import run_benchmark, write_results
from bench_workloads import RawStatus
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker

from kernos.infra.ports import free_port
from kernos.infra.temporal_dev import DYNAMIC_CONFIG, TemporalDevServer
from kernos.kernel import visibility
from kernos.workflows.agent_worker import sandbox_runner

SETTING = "system.forceSearchAttributesCacheRefreshOnRead=false"
ROUNDS = 4
RUNS = 300
AT_ONCE = 32
#: The server's reads of its own metadata from its store, which the cache spares.
METADATA_READS = (" GetCurrentClusterMetadata", " GetNamespace")


def server_cpu_s(server: TemporalDevServer) -> float:
    """CPU time (user and system) the server's process has used so far."""
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(field) for field in fields[11:13]) / os.sysconf("SC_CLK_TCK")


async def one_round(server: TemporalDevServer, client: Client) -> dict[str, float]:
    """Server CPU and metadata reads per workflow, and workflows a second, for one round."""
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(visibility.AGENT, "bench"),
            SearchAttributePair(visibility.TENANT, "bench"),
            SearchAttributePair(visibility.STATUS, "running"),
        ]
    )
    slots = asyncio.Semaphore(AT_ONCE)

    async def one() -> None:
        async with slots:
            await client.execute_workflow(
                RawStatus.run, id=uuid.uuid4().hex, task_queue="q", search_attributes=attributes
            )

    async with Worker(
        client, task_queue="q", workflows=[RawStatus], workflow_runner=sandbox_runner()
    ):
        await one()
        counted = await server.counters()
        before = server_cpu_s(server)
        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(RUNS)))
        rate = RUNS / (time.perf_counter() - began)
        used = server_cpu_s(server) - before
        reads = sum(
            count - counted.get(name, 0.0)
            for name, count in (await server.counters()).items()
            if name.startswith("persistence_requests ") and name.endswith(METADATA_READS)
        )
    return {
        "server_cpu_ms": round(used * 1000 / RUNS, 2),
        "workflows_per_s": round(rate, 1),
        "metadata_reads": round(reads / RUNS, 2),
    }


async def main() -> None:
    servers = {
        side: await TemporalDevServer.start(
            headless=True,
            dynamic_config=[value for value in DYNAMIC_CONFIG if cached or value != SETTING],
            metrics_port=free_port(),
        )
        for side, cached in (("start_dev", False), ("kernos", True))
    }
    rounds: dict[str, list[dict[str, float]]] = {side: [] for side in servers}
    try:
        clients = {side: await Client.connect(s.address) for side, s in servers.items()}
        for _ in range(ROUNDS):
            for side, server in servers.items():
                rounds[side].append(await one_round(server, clients[side]))
    finally:
        for server in servers.values():
            server.stop()
    result: dict[str, dict[str, object]] = {}
    for side, measured in rounds.items():
        medians = {
            key: round(statistics.median(m[key] for m in measured), 2) for key in measured[0]
        }
        result[side] = {**medians, "rounds": measured}
    print(f"{'per workflow, median of ' + str(ROUNDS):<32}{'start-dev':>12}{'kernos':>10}")
    for key in ("server_cpu_ms", "workflows_per_s", "metadata_reads"):
        print(f"{key:<32}{result['start_dev'][key]:>12}{result['kernos'][key]:>10}")
    write_results("search_attribute_cache", result)


if __name__ == "__main__":
    run_benchmark(main)
