"""Pydantic AI agents that import kernos: its model and its tools."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic_ai import Agent, RunContext

import kernos
from kernos.adapters.pydantic_ai import Governed, KernosModel, tools, wrap
from tests.typed_agents import launching

#: On kernos's own model (the run's), given the kernel's calculator.
calculating = Agent(
    KernosModel(), tools=tools("calculator"), name="calculating",
    instructions="Use the calculator for arithmetic, then answer with the number.",
)  # fmt: skip

#: A tool of an MCP server configured in kernos (`[tools.mcp.test]`), as the kernel's.
adding = Agent(KernosModel(), tools=tools("test__add"), instructions="Add.", name="adding")

#: What `Streaming` streams.
answering = Agent(KernosModel(), instructions="Answer briefly.", name="answering")


class Streaming(kernos.Agent):
    """Streams `answering`'s answer as Pydantic AI streams it (`run_stream`): its output is
    what it saw (JSON)."""

    name = "typed-streaming"

    async def run(self, task: str) -> str:
        """The streamed texts and the usage the run counted."""
        texts: list[str] = []
        async with answering.run_stream(task) as streamed:
            async for text in streamed.stream_text(delta=True):
                texts.append(text)
            usage = streamed.usage
        return json.dumps({"texts": texts, "output_tokens": usage.output_tokens})


@dataclass
class Person:
    """Who `greeting` greets: its dependencies."""

    name: str


greeting = Agent(KernosModel(), deps_type=Person, name="greeting")


@greeting.instructions
def who(ctx: RunContext[Person]) -> str:
    """The instructions, from the run's dependencies."""
    return f"Greet {ctx.deps.name} by name."


#: Its dependencies made inside the run, from the task.
Greeting = wrap(greeting, deps=lambda task: Person(name=task.title()))


class Driving(kernos.Agent):
    """Runs a Pydantic AI agent itself: its synchronous tool runs in the run, its call that
    needs approval is asked of a human (`Governed`)."""

    name = "typed-driving"

    async def run(self, task: str) -> str:
        """The launch report, as JSON."""
        result = await launching.run(task, model=KernosModel(), capabilities=[Governed()])
        return result.output.model_dump_json()
