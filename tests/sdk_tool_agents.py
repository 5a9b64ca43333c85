"""OpenAI Agents SDK agents that import kernos: one given the kernel's tools, and a kernos agent
whose own code runs SDK agents (streamed)."""

from __future__ import annotations

import json

from agents import Agent, RunConfig, Runner, function_tool
from openai.types.responses import ResponseTextDeltaEvent

import kernos
from kernos.adapters.openai_agents import tools

#: A tool of an MCP server configured in kernos (`[tools.mcp.test]`), as the kernel's.
adding = Agent(name="adding", instructions="Add with the tool.", tools=tools("test__add"))

calculating = Agent(
    name="calculating",
    instructions="Use the calculator for arithmetic, then answer with the number.",
    tools=tools("calculator"),
)


@function_tool
async def shout(text: str) -> str:
    """Upper-case `text`."""
    return text.upper()


#: What `Streaming` runs (a pool sees this module alone, so not `tests.sdk_agents:shouting`).
shouting = Agent(name="shouting", instructions="Shout what the user says.", tools=[shout])


class Streaming(kernos.Agent):
    """Runs `shouting` with the SDK's `Runner.run_streamed`, as code of its own would: what it
    saw stream by is its output (JSON)."""

    name = "streaming"

    async def run(self, task: str) -> str:
        """The streamed text deltas, the run items' names and the final output."""
        streamed = Runner.run_streamed(shouting, task)
        deltas: list[str] = []
        items: list[str] = []
        async for event in streamed.stream_events():
            raw = event.data if event.type == "raw_response_event" else None
            if isinstance(raw, ResponseTextDeltaEvent):
                deltas.append(raw.delta)
            elif event.type == "run_item_stream_event":
                items.append(event.name)
        return json.dumps({"deltas": deltas, "items": items, "final": streamed.final_output})


class Overriding(kernos.Agent):
    """Runs `shouting` with a run config whose model would replace the kernel's."""

    name = "overriding"

    async def run(self, task: str) -> str:
        """Refused before any model call."""
        result = await Runner.run(shouting, task, run_config=RunConfig(model="gpt-4o"))
        return str(result.final_output)
