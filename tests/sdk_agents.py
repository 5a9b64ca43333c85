"""Agents written with the OpenAI Agents SDK, as users write them: this module imports no kernos.

Registered by path (`"tests.sdk_agents:plain"`) like any user's agent; the registry recognises
each object's kind inside the pool that runs it.
"""

from __future__ import annotations

from pathlib import Path

from agents import Agent, ModelRetrySettings, ModelSettings, WebSearchTool, function_tool
from pydantic import BaseModel

plain = Agent(name="plain", instructions="Answer in one word.")


class City(BaseModel):
    """What `typed` answers with."""

    name: str
    country: str


typed = Agent(
    name="typed",
    instructions="Name the capital of the country the user names.",
    output_type=City,
    model_settings=ModelSettings(temperature=0.0, max_tokens=64),
)


@function_tool
async def shout(text: str) -> str:
    """Upper-case `text`."""
    return text.upper()


#: A function tool of its own, answered inside the run (it only computes).
shouting = Agent(name="shouting", instructions="Shout what the user says.", tools=[shout])


@function_tool
async def peek() -> str:
    """Read the machine's name: I/O, which code in a run cannot do."""
    return Path("/etc/hostname").read_text()


#: Its tool reaches outside the run: the run fails, naming it.
peeking = Agent(name="peeking", instructions="Peek.", tools=[peek])


@function_tool
def whisper(text: str) -> str:
    """Lower-case `text` (synchronous: the SDK would run it in a thread)."""
    return text.lower()


#: A synchronous function tool: kernos refuses the agent at load, saying what to change.
whispering = Agent(name="whispering", instructions="Whisper.", tools=[whisper])


@function_tool(needs_approval=True)
async def launch(target: str) -> str:
    """Launch at `target` (the SDK asks a human first)."""
    return f"launched at {target}"


#: The SDK's own approval: each call waits for a human's decision, a kernos approval.
launching = Agent(name="launching", instructions="Launch.", tools=[launch])

#: Another agent as a tool: its own run would not be governed, refused at load.
consulting = Agent(
    name="consulting",
    instructions="Ask the expert.",
    tools=[plain.as_tool(tool_name="ask_plain", tool_description="Ask plain.")],
)

#: The SDK's own retries of model calls (random delays a replay cannot repeat): refused.
retrying = Agent(
    name="retrying",
    instructions="Retry.",
    model_settings=ModelSettings(retry=ModelRetrySettings(max_retries=3)),
)


@function_tool(name_override="shout.loud")
async def loud(text: str) -> str:
    """Upper-case `text`, under a name no model can call."""
    return text.upper()


#: A tool name a model cannot call: refused at load rather than at the first model call.
misnamed = Agent(name="misnamed", instructions="Shout.", tools=[loud])

#: Hands off to `plain`.
triage = Agent(name="triage", instructions="Hand off to the right agent.", handoffs=[plain])

#: A hosted tool: it needs OpenAI's servers, refused at load.
searching = Agent(name="searching", instructions="Search.", tools=[WebSearchTool()])

#: Not an agent of any kind.
not_an_agent = {"name": "plain"}
