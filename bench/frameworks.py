"""Agents written with a framework, run three ways: directly, by Temporal's plugin, on kernos.

The workload (`framework_agents.py`): an OpenAI Agents SDK agent that calls a calculator, then
answers: two model calls and one tool call per task; with `--framework langgraph`, the same as
a LangGraph graph (`framework_graphs.py`: a model node, a tool node; directly and on kernos
only, see `graph_ways`); with `--framework pydantic-ai`, a Pydantic AI agent
(`framework_typed.py`; Temporal's way is Pydantic AI's own `TemporalDurability`); with
`--framework kernos`, a `kernos.Agent` (`framework_kernos_own.py`) against the same loop written
on the `openai` client alone (`framework_plain.py`). `--tasks` tasks,
`--at-once` in flight, each way on the same simulated model servers:
- **direct**: the SDK's `Runner.run` against the servers itself, its model client picking an
  instance round-robin, its calculator a function tool of its own;
- **plugin**: Temporal's `OpenAIAgentsPlugin` on the same Temporal server, its model calls
  activities on the workflow's worker (round-robin over the instances), its tool in the
  workflow;
- **kernos**: the agent registered by path, its model calls `llm.chat` syscalls pulled by each
  instance's worker within its slots and the calls it may send ahead to wait at the server
  (`queued`: by default 1 for a model's only instance, 0 for several; a second kernos stack
  with the other value shows what the choice is worth), its calculator the kernel's
  (`tool.call`, decided and ledgered).

The servers: OpenAI-compatible fakes with a fixed time per token and a fixed number of slots
each (a request waits for a slot, as in llama-server), 1, 2 and 4 of them; then the real
llama-server (one, 4 slots, `--llama-tasks` tasks 4 at once), which every way speaks to as an
OpenAI server (the SDK's own tool calling; a small model, so answers vary: the share with the
product in them is kept). Figures per way and setting: tasks per second, p50 and p99 seconds
per task, and the milliseconds each way adds per model call over the direct run (p50, two
calls a task). `bench/results/frameworks.json` (`frameworks_<framework>.json` for the others).
Run: `python bench/frameworks.py [--framework openai-agents|langgraph|pydantic-ai|kernos]
[--instances 1 2 4] [--tasks 48] [--at-once 16] [--llama-tasks 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import framework_graphs
import framework_plain
import framework_typed
from agents import (
    Model,
    ModelProvider,
    OpenAIChatCompletionsModel,
    RunConfig,
    Runner,
    set_tracing_disabled,
)
from bench_results import percentile, run_benchmark, write_results
from bench_stack import Services, kernel, services
from framework_agents import TASK, PluginTask, direct_agent
from openai import AsyncOpenAI
from pydantic_ai.durable_exec.temporal import AgentPlugin, PydanticAIPlugin
from temporalio.client import Client
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import Worker

from kernos import RunSpec
from kernos.infra.daemons import stop
from kernos.infra.llama import MODEL_ALIAS, LlamaServer, local_model
from kernos.infra.ports import free_port
from kernos.testing.fake_openai import FakeOpenAIServer, Recorded

MODEL = "sim"
#: Per server: requests generated at once (llama-server's `-np`).
SLOTS = 2
#: The simulated model's time per token, about llama-server's on this machine.
TOKEN_S = 0.012
#: Tasks in flight on the real llama-server: one per slot.
LLAMA_AT_ONCE = 4
#: Tokens of the answer, and of a tool call (generated before the call is sent whole).
ANSWER = "408" + " ." * 15
CALL_TOKENS = 10


def tool_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's calls: the calculator first, then none (it answers)."""
    if any(message["role"] == "tool" for message in body["messages"]):
        return []
    return [{"name": "calculator", "arguments": {"expression": "12 * 34"}}]


class SlottedServer(FakeOpenAIServer):
    """A fake whose requests wait for one of its slots, as a real server's do."""

    def __init__(self, slots: int) -> None:
        super().__init__(lambda body: ANSWER, token_delay_s=TOKEN_S, tool_calls=tool_calls)
        self.slots = asyncio.Semaphore(slots)

    async def _stream(self, record: Recorded) -> AsyncIterator[Any]:
        async with self.slots:
            if record.body.get("tools") and tool_calls(record.body):
                await asyncio.sleep(CALL_TOKENS * TOKEN_S)
            async for chunk in super()._stream(record):
                yield chunk


class RoundRobin(ModelProvider):
    """What an agent does without a kernel: each model call to the next instance in turn."""

    def __init__(self, base_urls: list[str], model: str) -> None:
        clients = [AsyncOpenAI(base_url=f"{url}/v1", api_key="none") for url in base_urls]
        self._clients = itertools.cycle(clients)
        self._model = model

    def get_model(self, model_name: str | None) -> Model:
        return OpenAIChatCompletionsModel(model_name or self._model, next(self._clients))


async def timed(
    one_task: Callable[[], Awaitable[str]], tasks: int, at_once: int, *, exact: bool
) -> dict[str, float]:
    """`tasks` tasks, `at_once` in flight: tasks per second, p50 and p99 seconds each, and the
    share of answers with the product in them. `exact`: every answer must start with it (the
    simulated model's)."""
    slots = asyncio.Semaphore(at_once)
    seconds: list[float] = []
    right = 0

    async def in_slot() -> None:
        nonlocal right
        async with slots:
            began = time.perf_counter()
            output = await one_task()
            assert output.startswith("408") or not exact, output
            right += "408" in output
            seconds.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(in_slot() for _ in range(tasks)))
    wall = time.perf_counter() - began
    return {
        "tasks_per_s": round(tasks / wall, 2),
        "p50_s": round(statistics.median(seconds), 3),
        "p99_s": round(percentile(seconds, 0.99), 3),
        "right": round(right / tasks, 2),
    }


async def on_simulated(
    running: Services, framework: str, instances: int, tasks: int, at_once: int
) -> dict[str, Any]:
    """The ways on `instances` simulated servers."""
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(SlottedServer(SLOTS)) for _ in range(instances)]
        urls = [server.base_url for server in servers]
        return await one_setting(running, framework, urls, SLOTS, MODEL, tasks, at_once, exact=True)


async def on_llama(running: Services, framework: str, tasks: int, at_once: int) -> dict[str, Any]:
    """The ways on the real llama-server (one, 4 slots), spoken to as an OpenAI server by all."""
    work = Path(tempfile.mkdtemp())
    model = local_model(Path.home() / ".cache" / "kernos" / "models")
    llama = await LlamaServer.start(
        model, port=free_port(), slots=4, context=8192, log_file=work / "llama.log"
    )
    try:
        return await one_setting(
            running, framework, [llama.base_url], 4, MODEL_ALIAS, tasks, at_once, exact=False
        )
    finally:
        stop(llama.pid)


Way = Callable[[], Awaitable[str]]


async def sdk_ways(stack: AsyncExitStack, address: str, urls: list[str], model: str) -> list[Way]:
    """The OpenAI Agents SDK agent directly and by Temporal's plugin."""
    config = RunConfig(model_provider=RoundRobin(urls, model), tracing_disabled=True)

    async def direct() -> str:
        return str((await Runner.run(direct_agent(model), TASK, run_config=config)).final_output)

    plugin = OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=120)),
        model_provider=RoundRobin(urls, model),
    )
    plugin_client = await Client.connect(address, plugins=[plugin])
    queue = f"frameworks-{uuid.uuid4().hex[:8]}"
    await stack.enter_async_context(
        Worker(
            plugin_client, task_queue=queue, workflows=[PluginTask], max_concurrent_activities=1000
        )
    )

    async def through_plugin() -> str:
        return await plugin_client.execute_workflow(
            PluginTask.run, args=[TASK, model], id=f"plugin-{uuid.uuid4().hex[:10]}",
            task_queue=queue,
        )  # fmt: skip

    return [direct, through_plugin]


async def graph_ways(stack: AsyncExitStack, address: str, urls: list[str], model: str) -> list[Way]:
    """The LangGraph graph directly.

    Not by Temporal's LangGraph plugin (`temporalio-langgraph` 0.1.0): its workflow, which
    compiles the graph in the sandbox at each run, did not finish one run here in 150 s.
    """
    framework_graphs.serve_from(urls, model)
    app = framework_graphs.builder().compile()

    async def direct() -> str:
        return framework_graphs.output(await app.ainvoke({"messages": [("user", TASK)]}))

    return [direct]


async def typed_ways(stack: AsyncExitStack, address: str, urls: list[str], model: str) -> list[Way]:
    """The Pydantic AI agent directly and by its own Temporal capability (`TemporalDurability`)."""
    framework_typed.servers.serve_from(urls, model)

    async def direct() -> str:
        return str((await framework_typed.direct.run(TASK)).output)

    plugin_client = await Client.connect(address, plugins=[PydanticAIPlugin()])
    queue = f"frameworks-{uuid.uuid4().hex[:8]}"
    await stack.enter_async_context(
        Worker(
            plugin_client, task_queue=queue, workflows=[framework_typed.DurableTask],
            plugins=[AgentPlugin(framework_typed.durable)], max_concurrent_activities=1000,
        )
    )  # fmt: skip

    async def durable() -> str:
        return await plugin_client.execute_workflow(
            framework_typed.DurableTask.run, TASK, id=f"durable-{uuid.uuid4().hex[:10]}",
            task_queue=queue,
        )  # fmt: skip

    return [direct, durable]


async def plain_ways(stack: AsyncExitStack, address: str, urls: list[str], model: str) -> list[Way]:
    """No framework: the function-calling loop on the `openai` client itself."""
    loop = framework_plain.PlainLoop(urls, model)

    async def direct() -> str:
        return await loop.run(TASK)

    return [direct]


#: Per framework: its direct and plugin ways, and its agent on kernos by path.
FRAMEWORKS = {
    "kernos": (plain_ways, "framework_kernos_own:Calc"),
    "openai-agents": (sdk_ways, "framework_kernos_agent:calc"),
    "langgraph": (graph_ways, "framework_kernos_graph:calc"),
    "pydantic-ai": (typed_ways, "framework_kernos_typed:calc"),
}


async def one_setting(
    running: Services, framework: str, urls: list[str], slots: int, model: str, tasks: int,
    at_once: int, *, exact: bool,
) -> dict[str, Any]:  # fmt: skip
    """The ways on the servers at `urls` (`slots` each, serving `model`); each warmed first."""
    default = 1 if len(urls) == 1 else 0  # as `Settings.queued` decides it
    others, kernos_agent = FRAMEWORKS[framework]
    async with AsyncExitStack() as stack:
        direct, *plugin = await others(stack, running.temporal.address, urls, model)

        async def on_kernos(queued: int | None) -> Callable[[], Awaitable[str]]:
            """A kernos stack whose instances hold `queued` calls each beyond their slots
            (None: the default)."""
            settings = running.settings(
                llm=[
                    {
                        "name": f"server{number}",
                        "kind": "openai",
                        "model": model,
                        "base_url": url,
                        "slots": slots,
                        "queued": queued,
                        "tool_calling": "native",
                    }
                    for number, url in enumerate(urls)
                ],
                agents={"calc": kernos_agent},
            )
            client = await stack.enter_async_context(kernel(settings))

            async def one_task() -> str:
                handle = await client.submit(RunSpec(agent="calc", task=TASK, model=model))
                return (await handle.result()).output

            return one_task

        ways = {
            "direct": direct,
            **({"plugin": plugin[0]} if plugin else {}),
            # The default (1 for a model's only instance, 0 for several), and the other.
            "kernos": await on_kernos(None),
            f"kernos, queued {1 - default}": await on_kernos(1 - default),
        }
        for one_task in ways.values():  # warm: the model clients, the pool's process, caches
            await one_task()
        measured = {
            way: await timed(one_task, tasks, at_once, exact=exact)
            for way, one_task in ways.items()
        }
    base = measured["direct"]["p50_s"]
    for way in measured.keys() - {"direct"}:
        # Two model calls a task: what each adds per call over the framework alone.
        measured[way]["added_ms_per_model_call"] = round(
            (measured[way]["p50_s"] - base) * 1000 / 2, 1
        )
    return measured


def show(results: dict[str, Any]) -> None:
    settings = dict(results["settings"])
    if "llama" in results:
        settings["llama"] = results["llama"]["ways"]
    print(f"{'servers':<9}{'way':<18}{'tasks/s':>8}{'p50 s':>8}{'p99 s':>8}{'+ms/call':>10}")
    for servers, ways in settings.items():
        for way, figures in ways.items():
            added = figures.get("added_ms_per_model_call", "")
            print(f"{servers:<9}{way:<18}{figures['tasks_per_s']:>8}{figures['p50_s']:>8}"
                  f"{figures['p99_s']:>8}{added:>10}")  # fmt: skip


def same_agent_each_way() -> None:
    """The kernos side's agent is told and set what the other ways' agent is."""
    import framework_agents
    import framework_kernos_agent
    import framework_kernos_graph
    import framework_kernos_own
    import framework_kernos_typed

    for name in ("INSTRUCTIONS", "SETTINGS"):
        assert getattr(framework_agents, name) == getattr(framework_kernos_agent, name), name
        assert getattr(framework_typed, name) == getattr(framework_kernos_typed, name), name
    for name in ("INSTRUCTIONS", "MAX_TOKENS"):
        assert getattr(framework_graphs, name) == getattr(framework_kernos_graph, name), name
        assert getattr(framework_plain, name) == getattr(framework_kernos_own, name), name


async def main() -> None:
    # The Agents SDK's own tracing exports to OpenAI's platform: off, as where no key is set.
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    set_tracing_disabled(True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), default="openai-agents")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tasks", type=int, default=48)
    parser.add_argument("--at-once", type=int, default=16)
    parser.add_argument(
        "--llama-tasks", type=int, default=16,
        help=f"tasks on the real llama-server, {LLAMA_AT_ONCE} at once (0: none)",
    )  # fmt: skip
    args = parser.parse_args()
    same_agent_each_way()
    results: dict[str, Any] = {
        "framework": args.framework, "tasks": args.tasks, "at_once": args.at_once,
        "slots_per_instance": SLOTS, "token_s": TOKEN_S, "settings": {},
    }  # fmt: skip
    async with services() as running:
        for instances in args.instances:
            results["settings"][str(instances)] = await on_simulated(
                running, args.framework, instances, args.tasks, args.at_once
            )
            print(json.dumps({instances: results["settings"][str(instances)]}))
        if args.llama_tasks:
            results["llama"] = {
                "tasks": args.llama_tasks, "at_once": LLAMA_AT_ONCE, "slots": 4,
                "ways": await on_llama(running, args.framework, args.llama_tasks, LLAMA_AT_ONCE),
            }  # fmt: skip
            print(json.dumps({"llama": results["llama"]}))
    show(results)
    named = "" if args.framework == "openai-agents" else f"_{args.framework}"
    write_results(f"frameworks{named}", results)


if __name__ == "__main__":
    run_benchmark(main)
