"""What a syscall through the kernel costs over a bare Temporal activity.

All sides run on the same Temporal dev server (in memory, the dynamic config that `kernos`
starts it with), with the same payloads, data converter and workflow sandbox; the LLM backend
answers at once. Three ways to make the same call:

- kernel: `self.llm.chat` in an agent: the activity runs on a kernel worker, on the model's
  queue, through the access interceptor (identity from the runs table, the Casbin decision, the
  audit row, the result row) with its heartbeat;
- raw: a bare workflow calling a no-op activity on a worker and queue of its own: the kernel's
  topology without the kernel (the agent worker never runs syscalls: it holds no credentials);
- raw, eager: the activity on the workflow's own worker and queue, so Temporal dispatches it
  eagerly; a shape the kernel cannot take without giving agent code the credentials;
- kernel, in process: the kernel's way with the agent's code in the agent worker's own process
  (`[isolation] mode = "in_process"`) instead of its pool's confined child: what confinement
  costs (`confined_ratio`).

Figures, in ms per syscall:
- sequential: one run at a time, 1 s apart; the marginal cost of one more syscall,
  (T(41 syscalls) - T(1 syscall)) / 40, so a run's admission and end are not counted;
- back to back: the same with no pause between runs;
- parallel: 50 runs of 10 syscalls at once; wall time per syscall.

Run: `make bench` (writes bench/results/syscall_overhead.json).
`python bench/syscall_overhead.py --without-audit-writes` is a diagnostic, printed only: the
same measurement with the audit's two statements per syscall (the decision row, the result
row) replaced by no-ops, to show what the audit costs. The kernel has no such setting.
`--without-run-events` is another: the run events' triggers disabled and no `llm.delta` written
(`[events] token_interval_s = 0`), to show what a run's live events cost.
`--parallel-only` measures the parallel row alone (the median of 3, sides interleaved), for
comparing two versions of the code in turn; also printed only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from bench_results import run_benchmark, write_results
from bench_workloads import NoopBackend, RawLoop, raw_noop
from temporalio.client import Client
from temporalio.worker import Worker

from kernos import KernosClient, RunSpec
from kernos.client import connect_temporal
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.access import Decision, Subject
from kernos.kernel.audit import AttemptKey, AuditLog
from kernos.kernel.config import DatabaseSettings, load_settings
from kernos.kernel.db import upgrade
from kernos.kernel.result_seal import new_signing_key
from kernos.worker import RunningWorkers, WorkerGroup
from kernos.workflows.agent_worker import sandbox_runner

LONG = 41
REPEATS = 7
PARALLEL_RUNS = 50
PARALLEL_SYSCALLS = 10
#: With `--parallel-only`: the median of this many parallel measurements per side.
PARALLEL_REPEATS = 3

Runner = Callable[[int], Awaitable[None]]


async def timed(run: Runner, syscalls: int) -> float:
    started = time.perf_counter()
    await run(syscalls)
    return time.perf_counter() - started


async def marginal_ms(
    runs: dict[str, Runner], pause_s: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Medians over repeats, per side, interleaved: the cost of one more syscall, and of a
    whole run with one syscall (from submission to its result)."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    shorts: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, run in runs.items():  # interleaved: drift on a shared machine hits all sides
            await asyncio.sleep(pause_s)
            short = await timed(run, 1)
            await asyncio.sleep(pause_s)
            long = await timed(run, LONG)
            samples[name].append((long - short) / (LONG - 1) * 1000)
            shorts[name].append(short * 1000)
    median = statistics.median
    return (
        {name: median(values) for name, values in samples.items()},
        {name: median(values) for name, values in shorts.items()},
    )


async def parallel_ms(run: Runner) -> float:
    """Wall time per syscall with many runs at once."""
    await asyncio.sleep(1.0)
    started = time.perf_counter()
    await asyncio.gather(*(run(PARALLEL_SYSCALLS) for _ in range(PARALLEL_RUNS)))
    return (time.perf_counter() - started) / (PARALLEL_RUNS * PARALLEL_SYSCALLS) * 1000


def row(figures: dict[str, float]) -> dict[str, float]:
    return {
        "kernel_ms": round(figures["kernel"], 2),
        "kernel_in_process_ms": round(figures["kernel_in_process"], 2),
        "confined_ratio": round(figures["kernel"] / figures["kernel_in_process"], 3),
        "raw_temporal_ms": round(figures["raw"], 2),
        "ratio": round(figures["kernel"] / figures["raw"], 3),
        "raw_eager_ms": round(figures["raw_eager"], 2),
        "ratio_to_eager": round(figures["kernel"] / figures["raw_eager"], 3),
    }


async def measure(
    kernos: KernosClient, in_process: KernosClient, raw_client: Client, parallel_only: bool
) -> dict[str, dict[str, float]]:
    def kernel_through(client: KernosClient) -> Runner:
        async def kernel(syscalls: int) -> None:
            handle = await client.submit(RunSpec(agent="loop", task=str(syscalls)))
            await handle.result()

        return kernel

    def raw_on(queue: str | None) -> Runner:
        async def raw(syscalls: int) -> None:
            await raw_client.execute_workflow(
                "RawLoop", args=[syscalls, queue], id=f"raw-{uuid.uuid4().hex}", task_queue="raw"
            )

        return raw

    runs = {
        "kernel": kernel_through(kernos),
        "kernel_in_process": kernel_through(in_process),
        "raw": raw_on("raw-activities"),
        "raw_eager": raw_on(None),
    }
    for run in runs.values():
        await run(2)  # warm up
    if parallel_only:
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(PARALLEL_REPEATS):
            for name, run in runs.items():  # interleaved, as the marginal costs are
                samples[name].append(await parallel_ms(run))
        return {"parallel": row({name: statistics.median(v) for name, v in samples.items()})}
    sequential, whole_runs = await marginal_ms(runs, 1.0)
    back_to_back, _ = await marginal_ms(runs, 0.0)
    return {
        "sequential": row(sequential),
        "back_to_back": row(back_to_back),
        "parallel": row({name: await parallel_ms(run) for name, run in runs.items()}),
        "run_with_one_syscall": {f"{k}_ms": round(v, 1) for k, v in whole_runs.items()},
    }


def skip_audit_writes() -> None:
    """The diagnostic: decisions stand as the policy made them, and nothing is written."""

    async def decide(
        self: AuditLog,
        key: AttemptKey,
        subject: Subject | None,
        syscall: str,
        resource: str,
        decision: Decision,
        *,
        metered: bool = False,
    ) -> Decision:
        return decision

    async def result(self: AuditLog, *args: object, **kwargs: object) -> None:
        return None

    AuditLog.record_decision = decide  # type: ignore[method-assign]
    AuditLog.record_result = result  # type: ignore[method-assign]


async def without_run_events(owner_dsn: str) -> None:
    """The diagnostic: the triggers that write runs' events, disabled."""
    async with await psycopg.AsyncConnection.connect(owner_dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT tgrelid::regclass::text AS table_name, tgname FROM pg_trigger"
            " WHERE tgname LIKE 'run_events_%'"
        )
        for table, trigger in await cursor.fetchall():
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--without-audit-writes", action="store_true")
    parser.add_argument("--without-run-events", action="store_true")
    parser.add_argument("--parallel-only", action="store_true")
    options = parser.parse_args()
    if options.without_audit_writes:
        skip_audit_writes()
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    temporal = await TemporalDevServer.start(headless=True)
    try:
        await upgrade(postgres.dsn(role="owner"))
        if options.without_run_events:
            await without_run_events(postgres.dsn(role="owner"))
        settings = load_settings(
            # Results sealed and checked, as on every kernel `kernos up` starts.
            temporal={"address": temporal.address, "result_signing_key": new_signing_key()},
            database={"dsn": postgres.dsn()},
            llm=[{"name": "noop", "kind": "scripted", "model": "noop", "slots": 64}],
            default_model="noop",  # not the embedded stack's model, if one was set up here
            agents={"loop": "bench_workloads:LoopAgent"},
            events={"token_interval_s": 0 if options.without_run_events else 0.2},
        )
        raw_client = await connect_temporal(settings)
        raw_workers = [
            Worker(
                raw_client,
                task_queue="raw",
                workflows=[RawLoop],
                activities=[raw_noop],
                workflow_runner=sandbox_runner(),
            ),
            Worker(raw_client, task_queue="raw-activities", activities=[raw_noop]),
        ]
        group = await WorkerGroup.create(
            await connect_temporal(settings), settings, backends={"noop": NoopBackend()}
        )
        # The same kernel workers; agent code in the agent worker's process, on a queue of its
        # own.
        unconfined = settings.model_copy(
            update={
                "isolation": settings.isolation.model_copy(update={"mode": "in_process"}),
                "temporal": settings.temporal.model_copy(
                    update={"agent_task_queue": "agents-in-process"}
                ),
            }
        )
        in_process_group = await WorkerGroup.create(
            await connect_temporal(unconfined),
            unconfined.model_copy(update={"database": DatabaseSettings()}),
            kind="agent",
        )
        polling = [asyncio.create_task(worker.run()) for worker in raw_workers]
        async with (
            RunningWorkers(group),
            RunningWorkers(in_process_group),
            await KernosClient.connect(settings) as kernos,
            await KernosClient.connect(unconfined) as in_process,
        ):
            assert group.pools is not None and group.pools.how.confined, "bubblewrap is needed"
            figures = await measure(kernos, in_process, raw_client, options.parallel_only)
        for worker in raw_workers:
            await worker.shutdown()
        await asyncio.gather(*polling)
    finally:
        temporal.stop()
        postgres.stop(delete=True)

    print(
        f"{'ms per syscall':<32}{'kernel':>9}{'in proc':>9}{'conf.':>7}{'raw':>9}{'ratio':>8}"
        f"{'eager':>9}{'ratio':>8}"
    )
    for label, key in (("sequential (1 s apart)", "sequential"), ("back to back", "back_to_back"),
                       (f"parallel ({PARALLEL_RUNS} runs)", "parallel")):  # fmt: skip
        if key not in figures:
            continue
        f = figures[key]
        print(
            f"{label:<32}{f['kernel_ms']:>9.2f}{f['kernel_in_process_ms']:>9.2f}"
            f"{f['confined_ratio']:>7.3f}{f['raw_temporal_ms']:>9.2f}{f['ratio']:>8.3f}"
            f"{f['raw_eager_ms']:>9.2f}{f['ratio_to_eager']:>8.3f}"
        )
    if whole := figures.get("run_with_one_syscall"):
        print(
            f"a whole run with one syscall, submission to result: kernel {whole['kernel_ms']} "
            f"ms, in process {whole['kernel_in_process_ms']} ms, raw {whole['raw_ms']} ms, "
            f"raw eager {whole['raw_eager_ms']} ms"
        )
    if options.parallel_only or options.without_audit_writes or options.without_run_events:
        print("(a partial or diagnostic measurement: not written to results)")
        return
    write_results(
        "syscall_overhead",
        {
            **figures["sequential"],
            "back_to_back": figures["back_to_back"],
            "parallel": {"runs": PARALLEL_RUNS, "syscalls_per_run": PARALLEL_SYSCALLS}
            | figures["parallel"],
            "run_with_one_syscall": figures["run_with_one_syscall"],
            "method": f"median of {REPEATS} marginal costs ({LONG} vs 1 syscalls); "
            "raw = activity on its own worker and queue; raw_eager = on the workflow's worker; "
            "kernel = agent code in its pool's confined child (bubblewrap); kernel_in_process "
            "= in the agent worker's own process",
        },
    )


if __name__ == "__main__":
    run_benchmark(main)
