"""bench/frameworks.py's Pydantic AI workload: one tool-using agent, as each side runs it.

The agent computes with a calculator, then answers: two model calls and one tool call a task,
as the OpenAI Agents SDK's workload (`framework_agents.py`). Run directly, its model is Pydantic
AI's `OpenAIChatModel`, one per server taken in turn, and the calculator a function tool of its
own; by Temporal's way (Pydantic AI's own `TemporalDurability`), the same agent with its model
requests and tool calls as activities; on kernos (`framework_kernos_typed.py`, which imports
kernos) the model is `KernosModel` and the calculator the kernel's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from openai import AsyncOpenAI
from pydantic_ai import Agent, ModelSettings
from pydantic_ai.durable_exec.temporal import TemporalDurability
from pydantic_ai.models import Model
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import workflow

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
SETTINGS = ModelSettings(temperature=0.0, max_tokens=32)


async def calculator(expression: str) -> str:
    """Evaluate a product of two whole numbers, `a * b`."""
    left, _, right = expression.partition("*")
    return str(int(left) * int(right))


def _chat_model(base_url: str, model: str) -> OpenAIChatModel:
    client = AsyncOpenAI(base_url=base_url, api_key="none")
    return OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))


class RoundRobin(WrapperModel):
    """What an agent does without a kernel: each model request to the next server in turn."""

    def __init__(self) -> None:
        super().__init__(_chat_model("http://unset.invalid/v1", "unset"))
        self._next: Iterator[Model] = itertools.cycle([self.wrapped])

    def serve_from(self, base_urls: list[str], model: str) -> None:
        """Ask the servers at `base_urls` in turn, for `model`."""
        models = [_chat_model(f"{url}/v1", model) for url in base_urls]
        self.wrapped = models[0]
        self._next = itertools.cycle(models)

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        return await next(self._next).request(*args, **kwargs)


#: The servers the direct and the durable agent ask (`serve_from`, in the benchmark's process).
servers = RoundRobin()
#: The agent as the framework runs it: its own tool, the servers in turn.
direct = Agent(servers, tools=[calculator], instructions=INSTRUCTIONS, model_settings=SETTINGS,
               name="calc")  # fmt: skip
#: The same agent made durable by Pydantic AI's Temporal capability: its model requests and its
#: tool calls are activities (run by the worker's copy of the agent, which asks `servers`).
durable = Agent(
    servers, tools=[calculator], instructions=INSTRUCTIONS, model_settings=SETTINGS,
    name="calc_durable", capabilities=[TemporalDurability()],
)  # fmt: skip


@workflow.defn
class DurableTask:
    """Temporal's side: the durable agent run in a workflow."""

    @workflow.run
    async def run(self, task: str) -> str:
        return str((await durable.run(task)).output)
