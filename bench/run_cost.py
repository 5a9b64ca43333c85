"""What a run costs through kernos, next to the same call through Temporal's OpenAI Agents plugin.

Side by side, on one Temporal dev server and one model server, interleaved: an OpenAI Agents
SDK agent run by Temporal's own plugin (`temporalio-openai-agents`: the workflow's model calls
are activities on the same worker, the model called with the `openai` client), and a kernos
run (admission, the confined agent code, the `llm.chat` syscall on the kernel worker, the
run's end); each making one call and ten calls, the same system and user message, 16 tokens
at temperature 0. The model server is the real llama-server (`--backend llama`) or a fake
OpenAI-compatible server that takes a fixed time per token (`--backend sim`), where the
kernel's own cost stands out.

Each run's phases come from its history (event times, milliseconds): the wait for and the
processing of its workflow tasks, the wait for its activities to start and their run, by
activity type; and from the client: the whole run, for kernos the admission before the
workflow starts, and from the close to the result in hand (a kernos client records the end
before it returns). On `sim`, also one-call runs per second at saturation, each side alone
with 32 runs in flight, and the CPU each part of the stack spent per run then. Printed as p50
over the runs; `bench/results/run_cost.json` keeps them.
Run: `python bench/run_cost.py [--backend llama|sim] [--runs N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from agents import OpenAIProvider, set_tracing_disabled
from bench_results import RESULTS, run_benchmark, write_results
from bench_stack import Services, cpu_seconds, kernel, services
from cost_prompt import PROMPT, SYSTEM, TOKENS
from openai import AsyncOpenAI
from plugin_workflow import PluginCalls
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import Worker

from kernos import KernosClient, RunSpec
from kernos.infra.daemons import stop
from kernos.infra.llama import MODEL_ALIAS, LlamaServer, local_model
from kernos.infra.ports import free_port
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.testing.fake_openai import FakeOpenAIServer

#: Runs in flight when measuring runs per second at saturation (the fake answers any number).
SATURATING_AT_ONCE = 32
#: The fake's time per token: about llama-server's on this machine for this model.
SIM_TOKEN_S = 0.012
SIM_REPLY = " ".join(f"w{i}" for i in range(TOKENS))


@dataclasses.dataclass
class Phases:
    """One run's phases, in milliseconds."""

    total: float
    admission: float = 0.0
    by_phase: dict[str, float] = dataclasses.field(default_factory=dict)


def _ms(event: HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e6


def history_phases(history: WorkflowHistory) -> dict[str, float]:
    """Workflow tasks' wait and processing, and each activity type's wait and run (ms)."""
    phases: dict[str, float] = defaultdict(float)
    scheduled: dict[int, HistoryEvent] = {}
    started: dict[int, HistoryEvent] = {}
    events = history.events
    phases["workflow, start to close"] = _ms(events[-1]) - _ms(events[0])
    for event in events:
        kind = event.WhichOneof("attributes")
        if kind in (
            "workflow_task_scheduled_event_attributes",
            "activity_task_scheduled_event_attributes",
        ):
            scheduled[event.event_id] = event
        elif kind == "workflow_task_started_event_attributes":
            since = scheduled[event.workflow_task_started_event_attributes.scheduled_event_id]
            phases["workflow tasks: wait"] += _ms(event) - _ms(since)
            started[event.event_id] = event
        elif kind == "workflow_task_completed_event_attributes":
            began = started[event.workflow_task_completed_event_attributes.started_event_id]
            phases["workflow tasks: processing"] += _ms(event) - _ms(began)
        elif kind == "activity_task_started_event_attributes":
            since = scheduled[event.activity_task_started_event_attributes.scheduled_event_id]
            name = since.activity_task_scheduled_event_attributes.activity_type.name
            phases[f"{name}: wait to start"] += _ms(event) - _ms(since)
            started[event.event_id] = event
        elif kind == "activity_task_completed_event_attributes":
            began = started[event.activity_task_completed_event_attributes.started_event_id]
            since = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            name = since.activity_task_scheduled_event_attributes.activity_type.name
            phases[f"{name}: run"] += _ms(event) - _ms(began)
    return dict(phases)


async def plugin_run(client: Client, queue: str, calls: int) -> Phases:
    """One plugin workflow of `calls` model calls."""
    workflow_id = f"plugin-{uuid.uuid4().hex[:10]}"
    began = time.perf_counter()
    handle = await client.start_workflow(
        PluginCalls.run, args=[calls, MODEL_ALIAS], id=workflow_id, task_queue=queue
    )
    await handle.result()
    total, ended_ns = (time.perf_counter() - began) * 1000, time.time_ns()
    history = await handle.fetch_history()
    return Phases(total, by_phase=history_phases(history) | _after_close(history, ended_ns))


async def kernos_run(client: KernosClient, calls: int) -> Phases:
    """One kernos run of `calls` `llm.chat` syscalls."""
    began = time.perf_counter()
    began_ns = time.time_ns()
    handle = await client.submit(cost_run(calls))
    await handle.result()
    total, ended_ns = (time.perf_counter() - began) * 1000, time.time_ns()
    history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
    # Admission: from the client's call to the workflow's start (one clock: this machine's).
    admission = _ms(history.events[0]) - began_ns / 1e6
    return Phases(total, admission, history_phases(history) | _after_close(history, ended_ns))


def _after_close(history: WorkflowHistory, ended_ns: int) -> dict[str, float]:
    """From the run's close to its result in the client's hands (for kernos, with the end
    recorded), on this machine's one clock."""
    return {"after the close: the client has the result": ended_ns / 1e6 - _ms(history.events[-1])}


async def plugin_call(client: Client, queue: str) -> None:
    """One plugin run of one call, start to result, nothing else."""
    await client.execute_workflow(
        PluginCalls.run, args=[1, MODEL_ALIAS], id=f"plugin-{uuid.uuid4().hex[:10]}",
        task_queue=queue,
    )  # fmt: skip


async def kernos_call(client: KernosClient) -> None:
    """One kernos run of one call, submit to result (its end recorded), nothing else."""
    handle = await client.submit(cost_run(1))
    await handle.result()


def cost_run(calls: int) -> RunSpec:
    """The kernos run of `calls` calls, each the request the plugin's workflow sends."""
    return RunSpec(agent="cost", task=f"{calls}\n{TOKENS}\n{SYSTEM}\n{PROMPT}")


def p50(runs: list[Phases]) -> dict[str, float]:
    """Each phase's median over the runs (a phase a run lacks counts as 0)."""
    names = sorted({name for run in runs for name in run.by_phase})
    figures = {
        "whole run (client)": statistics.median(run.total for run in runs),
        "admission (client to workflow start)": statistics.median(run.admission for run in runs),
    }
    for name in names:
        figures[name] = statistics.median(run.by_phase.get(name, 0.0) for run in runs)
    return {name: round(value, 1) for name, value in figures.items()}


@dataclasses.dataclass
class Rate:
    """One side's runs at saturation."""

    runs_per_second: float
    cpu_ms_per_run: dict[str, float]
    #: The Temporal server's work per run, by counter (those that moved).
    server_work_per_run: dict[str, float]


async def runs_per_second(
    one_run: Callable[[], Awaitable[object]], runs: int, at_once: int, server: TemporalDevServer
) -> Rate:
    """One-call runs per second with `at_once` in flight, `runs` in all; the CPU milliseconds
    each part of the stack spent per run meanwhile, and the Temporal server's work per run."""
    slots = asyncio.Semaphore(at_once)

    async def in_slot() -> None:
        async with slots:
            await one_run()

    counted = await server.counters()
    before = cpu_seconds()
    began = time.perf_counter()
    await asyncio.gather(*(in_slot() for _ in range(runs)))
    rate = runs / (time.perf_counter() - began)
    after = cpu_seconds()
    work = {
        name: round((value - counted.get(name, 0.0)) / runs, 2)
        for name, value in (await server.counters()).items()
    }
    return Rate(
        rate,
        {part: round((after[part] - before.get(part, 0.0)) * 1000 / runs, 1) for part in after},
        {name: per_run for name, per_run in sorted(work.items()) if per_run >= 0.05},
    )


async def saturation(
    plugin: Callable[[], Awaitable[object]], kernos: Callable[[], Awaitable[object]],
    runs: int, at_once: int, server: TemporalDevServer,
) -> dict[str, Any]:  # fmt: skip
    """Each side's one-call runs per second at saturation (two rounds each, alternated; the
    better of two, the machine being shared), and the CPU each part spent per run then."""
    best: dict[str, Rate] = {}
    for _ in range(2):
        for side, one_run in (("plugin", plugin), ("kernos", kernos)):
            measured = await runs_per_second(one_run, runs, at_once, server)
            if side not in best or measured.runs_per_second > best[side].runs_per_second:
                best[side] = measured
    return {
        **{side: round(rate.runs_per_second, 1) for side, rate in best.items()},
        "cpu_ms_per_run": {side: rate.cpu_ms_per_run for side, rate in best.items()},
        "server_work_per_run": {side: rate.server_work_per_run for side, rate in best.items()},
    }


async def measure(
    running: Services, base_url: str, kind: str, runs: int, saturating: int = 0
) -> dict[str, Any]:
    """Both sides on the server at `base_url`, interleaved; p50 of each phase."""
    provider = OpenAIProvider(
        openai_client=AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none"),
        use_responses=False,
    )
    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=120)),
        model_provider=provider,
    )
    plugin_client = await Client.connect(running.temporal.address, plugins=[plugin])
    queue = f"plugin-{uuid.uuid4().hex[:8]}"
    settings = running.settings(
        llm=[{"name": "local", "kind": kind, "model": MODEL_ALIAS, "base_url": base_url}]
    )
    sides: dict[str, list[Phases]] = defaultdict(list)
    async with (
        Worker(plugin_client, task_queue=queue, workflows=[PluginCalls]),
        kernel(settings) as client,
    ):
        # Warm both: the model's prompt cache, the pool's process, the workers' caches.
        await plugin_run(plugin_client, queue, 1)
        await kernos_run(client, 1)
        for _ in range(runs):
            for calls in (1, 10):
                sides[f"plugin, {calls} calls"].append(
                    await plugin_run(plugin_client, queue, calls)
                )
                sides[f"kernos, {calls} calls"].append(await kernos_run(client, calls))
        rates = (
            await saturation(
                lambda: plugin_call(plugin_client, queue), lambda: kernos_call(client),
                saturating, SATURATING_AT_ONCE, running.temporal,
            )
            if saturating
            else None
        )  # fmt: skip
    result: dict[str, Any] = {side: p50(measured) for side, measured in sides.items()}
    if rates is not None:
        result["runs_per_second"] = rates | {"runs": saturating, "at_once": SATURATING_AT_ONCE}
    one = {side: result[f"{side}, 1 calls"]["whole run (client)"] for side in ("plugin", "kernos")}
    ten = {side: result[f"{side}, 10 calls"]["whole run (client)"] for side in ("plugin", "kernos")}
    further = {side: (ten[side] - one[side]) / 9 for side in one}
    result["one_call_ratio"] = round(one["kernos"] / one["plugin"], 3)
    result["further_call_ms"] = {side: round(value, 1) for side, value in further.items()}
    result["further_call_ratio"] = round(further["kernos"] / further["plugin"], 3)
    return result


def show(backend: str, result: dict[str, Any]) -> None:
    sides = [key for key in result if "calls" in key]
    names: list[str] = []
    for side in sides:
        names += [name for name in result[side] if name not in names]
    print(f"\n{backend}: p50 ms over the runs")
    print(f"{'phase':<48}" + "".join(f"{side:>18}" for side in sides))
    for name in names:
        cells = "".join(f"{result[side].get(name, 0.0):>18.1f}" for side in sides)
        print(f"{name[:47]:<48}{cells}")
    print(
        f"one call: kernos / plugin {result['one_call_ratio']}x (goal 1.10); each further call "
        f"{result['further_call_ms']['kernos']} ms against {result['further_call_ms']['plugin']}"
        f" ms ({result['further_call_ratio']}x, goal 1.10)"
    )
    if "runs_per_second" in result:
        rates = result["runs_per_second"]
        print(
            f"one-call runs per second, {rates['at_once']} at once: kernos {rates['kernos']}, "
            f"plugin {rates['plugin']} (goal: kernos at least the plugin's)"
        )
        for side, cpu in rates["cpu_ms_per_run"].items():
            print(f"  CPU ms per run, {side}: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
        work = rates["server_work_per_run"]
        print(f"  Temporal server's work per run{'':<38}{'plugin':>10}{'kernos':>10}")
        for name in sorted({*work["plugin"], *work["kernos"]}):
            print(
                f"    {name[:70]:<70}{work['plugin'].get(name, 0.0):>10.2f}"
                f"{work['kernos'].get(name, 0.0):>10.2f}"
            )


async def main() -> None:
    # The Agents SDK's own tracing exports to OpenAI's platform: off, as where no key is set
    # (the plugin's trace provider reads the variable, not only the SDK's switch).
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    set_tracing_disabled(True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("llama", "sim"), nargs="+", default=["sim", "llama"])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--saturating", type=int, default=160,
        help="one-call runs per side for runs per second at saturation (on sim; 0: none)",
    )  # fmt: skip
    args = parser.parse_args()
    path = RESULTS / "run_cost.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    async with services() as running:
        for backend in args.backend:
            if backend == "sim":
                async with FakeOpenAIServer(
                    lambda body: SIM_REPLY, token_delay_s=SIM_TOKEN_S
                ) as fake:
                    measured = await measure(
                        running, fake.base_url, "openai", args.runs, args.saturating
                    )
            else:
                work = Path(tempfile.mkdtemp())
                model = local_model(Path.home() / ".cache" / "kernos" / "models")
                llama = await LlamaServer.start(
                    model, port=free_port(), slots=4, context=4096, log_file=work / "llama.log"
                )
                try:
                    measured = await measure(running, llama.base_url, "llamacpp", args.runs)
                finally:
                    stop(llama.pid)
            measured["runs"] = args.runs
            results[backend] = measured
            show(backend, measured)
            write_results("run_cost", results)


if __name__ == "__main__":
    run_benchmark(main)
