"""What pools cost and how well they keep tenants apart, on the embedded stack.

- cold start: a one-syscall run in a tenant whose pool has no process yet (it takes the spare,
  imports the agent in its sandbox) against the same run in a tenant whose pool is warm,
  interleaved, p50 and p99 of the difference;
- memory per idle pool: what each pool's process uses once its run is done (its cgroup's
  count, as root);
- a hostile neighbour: an honest tenant's 20 runs of 10 no-op syscalls at once, wall time and
  per-run p99, alone and while another tenant's two runs burn CPU in workflow code (1.5 s
  turns, under the SDK's deadlock timeout), in pools with equal CPU shares;
- a neighbour that holds its workflow tasks: the same burst, alone and while another tenant's
  40 runs block their tasks (six turns of 1.5 s) on a host of 20 workflow-task slots, once with each
  pool held to its share (a quarter) and once without (`pool_share = 1`), then 120 runs on a
  host of the default 100 slots; and how many tasks of each tenant were turned or given back
  (each repeat's neighbour is ended, terminated, and its tasks gone before the next);
- a neighbour on every core (`cpu`): the same burst, alone and while another tenant's run
  hashes on four threads (hashlib lets go of the GIL), with cgroups, without (each pool's
  process a session, weighted by its scheduling group's nice), and with the kernel's autogroup
  switch off for that part (as root; it holds for processes started meanwhile: the pools');
- a crowd: 2,000 runs open at once over 100 tenants (100 pools on one host), each waiting on
  a timer then making one syscall: how long the 2,000 take to submit, the time each takes
  beyond its wait (p50, p99), the pools' processes and the memory they take; and, from 200 of
  the runs' histories, when their first workflow task was done and how many tasks timed out.

Run: `python bench/pools.py [single|slots|cpu|crowd ...]` (all parts by default; writes each part's
figures into bench/results/pools.json as it ends, keeping the others'). As root for cgroups.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from bench_results import RESULTS, run_benchmark, write_results
from bench_stack import Services, cpu_seconds, services
from bench_workloads import NoopBackend
from temporalio.api.enums.v1 import EventType, TimeoutType

from kernos import KernosClient, RunSpec
from kernos.client import connect_temporal
from kernos.worker import RunningWorkers, WorkerGroup
from kernos.workflows.pool_host import PoolRunner

COLD_STARTS = 12
HONEST_RUNS = 20
HONEST_SYSCALLS = 10
REPEATS = 3
#: The slot-holding neighbour: (slots, holders, pool_share) of each host it is measured on,
#: with more holders than slots: a small host with two shares and none, and the default one.
HOSTS = ((20, 40, 0.25), (20, 40, 0.1), (20, 40, 1.0), (100, 120, 0.25))
#: How long each holder holds its first task, in seconds.
HOLDER_TURNS = 6
#: The crowd: tenants, runs each, and how long each run waits before its syscall.
TENANTS = 100
RUNS_PER_TENANT = 20
WAIT_S = 60.0
SUBMITTERS = 32
#: Runs whose end the crowd waits for at once (a server limits concurrent long polls).
WAITERS = 200
#: Runs of the crowd whose histories are read for where their time went.
SURVEYED = 200
AGENTS = {
    "loop": "bench_workloads:LoopAgent",
    "burner": "bench_workloads:BurnerAgent",
    "holder": "bench_workloads:HolderAgent",
    "threaded-burner": "bench_workloads:ThreadedBurnerAgent",
    "waiter": "bench_workloads:WaiterAgent",
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def one_run(
    client: KernosClient, tenant: str, syscalls: int = 1, ids: list[str] | None = None
) -> float:
    started = time.perf_counter()
    handle = await client.submit(RunSpec(agent="loop", task=str(syscalls), tenant=tenant))
    if ids is not None:
        ids.append(handle.run_id)
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


async def honest_burst(
    client: KernosClient,
    tenant: str,
    ids: list[str] | None = None,
    cpu: list[dict[str, float]] | None = None,
) -> tuple[float, float]:
    """Wall time of the burst, and the p99 of its runs, in ms (their ids land in `ids`, the
    machine's CPU seconds meanwhile in `cpu`)."""
    before = cpu_seconds()
    started = time.perf_counter()
    each = await asyncio.gather(
        *(one_run(client, tenant, HONEST_SYSCALLS, ids) for _ in range(HONEST_RUNS))
    )
    took = (time.perf_counter() - started) * 1000
    if cpu is not None:
        after = cpu_seconds()
        cpu.append({what: after[what] - before.get(what, 0.0) for what in after})
    return took, percentile(list(each), 0.99)


#: Where a run's time goes, as its history has it: (from, to) event types of each phase.
PHASES = {
    "task_wait": (
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    ),
    "task_run": (
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    ),
    "activity_wait": (
        EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
    ),
    "activity_run": (
        EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    ),
}


async def phases(client: KernosClient, run_ids: list[str]) -> dict[str, float]:
    """Each phase's time per run (ms, the mean), from the run's history: a wait from the first
    time its task was scheduled (one that timed out on a sticky queue is scheduled again) to
    its start, a run from its last start to its end; the first task's wait, on the host's task
    queue (the others wait on its sticky queue), is given apart too."""
    totals = dict.fromkeys([*PHASES, "first_task_wait"], 0.0)
    for run_id in run_ids:
        history = await client.temporal.get_workflow_handle(run_id).fetch_history()
        began: dict[int, float] = {}
        first = True
        for event in history.events:
            at = event.event_time.ToMicroseconds() / 1000
            for phase, (start, end) in PHASES.items():
                if event.event_type == start and (phase.endswith("_run") or start not in began):
                    began[start] = at
                elif event.event_type == end and start in began:
                    took = at - began.pop(start)
                    totals[phase] += took
                    if phase == "task_wait" and first:
                        totals["first_task_wait"] += took
                        first = False
    return {phase: round(total / len(run_ids), 1) for phase, total in totals.items()}


async def beside(
    client: KernosClient, pools: PoolRunner, agent: str, task: str, count: int
) -> dict[str, Any]:
    """The honest burst alone, and next to `count` runs of `agent` in another tenant."""
    honest = f"honest-{uuid.uuid4().hex[:6]}"
    await one_run(client, honest)
    alone, crowded = [], []
    alone_ids: list[str] = []
    crowded_ids: list[str] = []
    alone_cpu: list[dict[str, float]] = []
    crowded_cpu: list[dict[str, float]] = []
    neighbours = []
    for _ in range(REPEATS):
        alone.append(await honest_burst(client, honest, alone_ids, alone_cpu))
        neighbour = f"{agent}-{uuid.uuid4().hex[:6]}"
        neighbours.append(neighbour)
        handles = [
            await client.submit(RunSpec(agent=agent, task=task, tenant=neighbour))
            for _ in range(count)
        ]
        await asyncio.sleep(2.0)  # the neighbour is at it
        crowded.append(await honest_burst(client, honest, crowded_ids, crowded_cpu))
        # Ended at once, not cancelled: a cancelled run that blocks its tasks replays its
        # blocking code at each task until its cancellation is seen, and the next repeat's
        # burst, alone or not, would run beside the lot (the README gives that cost apart).
        for handle in handles:
            await client.temporal.get_workflow_handle(handle.run_id).terminate("the bench ends it")
        for _ in range(600):
            if not any(p.pool == neighbour and p.tasks for p in pools.status().pools):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)
    turned_back = pools.status().pools
    wall = statistics.median(c[0] for c in crowded) / statistics.median(a[0] for a in alone)
    p99 = statistics.median(c[1] for c in crowded) / statistics.median(a[1] for a in alone)
    return {
        "alone_wall_ms": round(statistics.median(a[0] for a in alone), 1),
        "crowded_wall_ms": round(statistics.median(c[0] for c in crowded), 1),
        "wall_ratio": round(wall, 3),
        "alone_p99_ms": round(statistics.median(a[1] for a in alone), 1),
        "crowded_p99_ms": round(statistics.median(c[1] for c in crowded), 1),
        "p99_ratio": round(p99, 3),
        # Workflow tasks turned back or given back over a pool's share, in all.
        "honest_turned_back": sum(p.turned_back for p in turned_back if p.pool == honest),
        "neighbour_turned_back": sum(p.turned_back for p in turned_back if p.pool in neighbours),
        # Where an honest run's time went, alone and crowded (ms per run, from histories).
        "alone_phases_ms": await phases(client, alone_ids),
        "crowded_phases_ms": await phases(client, crowded_ids),
        # The machine's CPU seconds during a burst, by process (the median of each).
        "alone_cpu_s": median_of_each(alone_cpu),
        "crowded_cpu_s": median_of_each(crowded_cpu),
    }


def median_of_each(samples: list[dict[str, float]]) -> dict[str, float]:
    """Each key's median over the samples (0 where one lacks it), rounded."""
    keys = sorted({key for sample in samples for key in sample})
    return {
        key: round(statistics.median(sample.get(key, 0.0) for sample in samples), 2) for key in keys
    }


async def crowd(client: KernosClient, pools: PoolRunner) -> dict[str, float]:
    """TENANTS x RUNS_PER_TENANT runs open at once, each in its tenant's pool."""
    tenants = [f"crowd{n:03d}-{uuid.uuid4().hex[:4]}" for n in range(TENANTS)]
    specs = [
        RunSpec(agent="waiter", task=str(WAIT_S), tenant=tenant)
        for _ in range(RUNS_PER_TENANT)
        for tenant in tenants
    ]
    gate = asyncio.Semaphore(SUBMITTERS)
    waits = asyncio.Semaphore(WAITERS)
    submitted: list[float] = []
    ids: list[str] = []
    all_submitted = asyncio.Event()

    async def run(spec: RunSpec) -> float:
        async with gate:
            handle = await client.submit(spec)
            submitted.append(time.perf_counter())
            ids.append(handle.run_id)
            if len(submitted) == len(specs):
                all_submitted.set()
        async with waits:
            await handle.result()
        # As the server has it: the client's own waiting does not count.
        described = await client.temporal.get_workflow_handle(handle.run_id).describe()
        assert described.close_time is not None
        took = (described.close_time - described.start_time).total_seconds()
        return (took - WAIT_S) * 1000

    began = time.perf_counter()
    tasks = [asyncio.create_task(run(spec)) for spec in specs]
    await all_submitted.wait()
    submit_s = max(submitted) - began
    # Every run is open (the first to finish does so WAIT_S after its submission): the pools
    # have started by now, or are starting.
    await asyncio.sleep(min(10.0, max(0.0, WAIT_S - submit_s - 5)))
    state = pools.status()
    memory = [p.memory_bytes for p in state.pools if p.memory_bytes]
    extra = await asyncio.gather(*tasks)
    surveyed = await survey(client, [run_id for run_id in ids[:: max(1, len(ids) // SURVEYED)]])
    return {
        "runs": len(specs),
        "tenants": TENANTS,
        "submit_s": round(submit_s, 1),
        "extra_ms_p50": round(statistics.median(extra), 1),
        "extra_ms_p99": round(percentile(list(extra), 0.99), 1),
        "pools": len(state.pools),
        "runs_cached": sum(p.runs for p in state.pools),
        "pools_memory_gib": round(sum(memory) / 2**30, 2) if memory else 0.0,
        "turned_back": sum(p.turned_back for p in pools.status().pools),
        **surveyed,
    }


async def survey(client: KernosClient, run_ids: list[str]) -> dict[str, float]:
    """Where the surveyed runs' time went, from their histories: how long the first workflow
    task took to complete after the run started, and how many workflow tasks timed out (on a
    host, past Temporal's start-to-close timeout, their work thrown away; or waiting on a
    host's sticky queue, past its schedule-to-start timeout) or failed (Temporal writes a task
    that fails again and again once, so these are at least)."""
    first_task_s, timed_out, failed = [], collections.Counter[int](), 0
    for run_id in run_ids:
        history = await client.temporal.get_workflow_handle(run_id).fetch_history()
        started = history.events[0].event_time.ToDatetime()
        completed = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        ]
        first_task_s.append((completed[0].event_time.ToDatetime() - started).total_seconds())
        timed_out.update(
            e.workflow_task_timed_out_event_attributes.timeout_type
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
        )
        failed += sum(
            e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events
        )
    return {
        "surveyed": len(run_ids),
        "first_task_s_p50": round(statistics.median(first_task_s), 1),
        "first_task_s_p99": round(percentile(first_task_s, 0.99), 1),
        "tasks_timed_out": timed_out.total(),
        "tasks_timed_out_running": timed_out[TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE],
        "tasks_timed_out_waiting": timed_out[TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START],
        "tasks_failed": failed,
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


@contextlib.asynccontextmanager
async def kernel(
    running: Services, **isolation: float | bool
) -> AsyncIterator[tuple[KernosClient, PoolRunner]]:
    """Workers on the embedded stack, with `isolation` settings, and a client."""
    settings = running.settings(
        llm=[{"name": "noop", "kind": "scripted", "model": "noop", "slots": 64}],
        default_model="noop",
        agents=AGENTS,
        isolation=isolation,
    )
    group = await WorkerGroup.create(
        await connect_temporal(settings), settings, backends={"noop": NoopBackend()}
    )
    async with RunningWorkers(group), await KernosClient.connect(settings) as client:
        assert group.pools is not None and group.pools.how.confined, "bubblewrap is needed"
        yield client, group.pools


async def part_single(running: Services, result: dict[str, Any]) -> None:
    async with kernel(running) as (client, pools):
        cold = await cold_starts(client)
        memory = idle_memory(pools)
        burner = await beside(client, pools, "burner", "8", 2)
    result.update(cold_start=cold, idle_pool_memory=memory, hostile_neighbour=burner)
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
        f"{burner['alone_wall_ms']} ms alone, {burner['crowded_wall_ms']} ms next to a burner "
        f"({burner['wall_ratio']}x); p99 per run {burner['alone_p99_ms']} -> "
        f"{burner['crowded_p99_ms']} ms ({burner['p99_ratio']}x; goal <= 1.2x)"
    )


async def part_slots(running: Services, result: dict[str, Any]) -> None:
    shares: dict[str, dict[str, float]] = {}
    for slots, holders, share in HOSTS:
        async with kernel(running, task_slots=slots, pool_share=share) as (client, pools):
            held = await beside(client, pools, "holder", str(HOLDER_TURNS), holders)
        shares[f"{slots} slots, pool_share {share}"] = held
        print(
            f"next to {holders} runs holding their tasks, {slots} slots, pool_share {share}: "
            f"{held['alone_wall_ms']} ms alone, {held['crowded_wall_ms']} ms crowded "
            f"({held['wall_ratio']}x); tasks turned or given back: {held['honest_turned_back']} "
            f"of the honest tenant's, {held['neighbour_turned_back']} of its neighbour's; "
            f"an honest run's phases (ms), alone {held['alone_phases_ms']}, crowded "
            f"{held['crowded_phases_ms']}; CPU seconds of a burst, alone {held['alone_cpu_s']}, "
            f"crowded {held['crowded_cpu_s']}"
        )
    result["holding_neighbour"] = shares


async def part_crowd(running: Services, result: dict[str, Any]) -> None:
    async with kernel(running) as (client, pools):
        many = await crowd(client, pools)
    result["crowd"] = many
    print(
        f"crowd: {many['runs']} runs over {many['tenants']} tenants in {many['pools']} pools "
        f"({many['pools_memory_gib']} GiB), submitted in {many['submit_s']} s; beyond each "
        f"run's wait: {many['extra_ms_p50']} ms p50, {many['extra_ms_p99']} ms p99; "
        f"{many['turned_back']} tasks turned back; of {many['surveyed']} runs: first task "
        f"{many['first_task_s_p50']} s p50, {many['first_task_s_p99']} s p99 after the start, "
        f"{many['tasks_timed_out']} tasks timed out ({many['tasks_timed_out_running']} running, "
        f"{many['tasks_timed_out_waiting']} waiting on a sticky queue), "
        f"{many['tasks_failed']} failed"
    )


@contextlib.contextmanager
def autogroups(enabled: bool) -> Iterator[bool]:
    """The kernel's autogroup scheduling as asked for the block (switching it needs root);
    whether it is. Switched, it holds for processes started after: those running keep their
    groups (the bench's own, Temporal's, PostgreSQL's)."""
    knob = Path("/proc/sys/kernel/sched_autogroup_enabled")
    wanted = "1" if enabled else "0"
    try:
        before = knob.read_text().strip()
        if before != wanted:
            knob.write_text(wanted)
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        if before != wanted:
            knob.write_text(before)


async def part_cpu(running: Services, result: dict[str, Any]) -> None:
    """The honest burst next to a pool whose threads take every core (hashing without the GIL).

    With cgroups (a CPU share); without (each pool's process a session of its own, whose
    scheduling group the host weighs); and with autogroups switched off for the processes
    started meanwhile (the pools', the workers' threads are the bench's own).
    """
    shares: dict[str, dict[str, float]] = {}
    variants: tuple[tuple[str, dict[str, bool], bool], ...] = (
        ("cgroups", {}, True),
        ("no cgroups", {"cgroups": False}, True),
        ("no cgroups, autogroups off for new processes", {"cgroups": False}, False),
    )
    for label, isolation, grouped in variants:
        with autogroups(grouped) as as_asked:
            if not as_asked:
                print(f"{label}: skipped (the kernel's autogroups could not be set so)")
                continue
            async with kernel(running, **isolation) as (client, pools):
                shares[label] = await beside(client, pools, "threaded-burner", "8", 1)
        held = shares[label]
        print(
            f"next to a pool hashing on 4 threads, {label}: {held['alone_wall_ms']} ms alone, "
            f"{held['crowded_wall_ms']} ms crowded ({held['wall_ratio']}x); p99 "
            f"{held['p99_ratio']}x"
        )
    result["threaded_neighbour"] = shares


PARTS = {"single": part_single, "slots": part_slots, "crowd": part_crowd, "cpu": part_cpu}


async def main() -> None:
    """Run the parts named on the command line (all by default); keep the others' figures."""
    chosen = sys.argv[1:] or list(PARTS)
    path = RESULTS / "pools.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    async with services() as running:
        for name in chosen:
            await PARTS[name](running, result)
            write_results("pools", result)


if __name__ == "__main__":
    run_benchmark(main)
