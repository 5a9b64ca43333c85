"""Agents written with the OpenAI Agents SDK, as users write them: this module imports no kernos.

Registered by path (`"tests.sdk_agents:plain"`) like any user's agent; the registry recognises
each object's kind inside the pool that runs it.
"""

from __future__ import annotations

from agents import Agent, ModelSettings, function_tool
from pydantic import BaseModel

#: The SDK agents the tests register, by path (the replay of their histories too).
SDK_AGENTS = {
    "plain": "tests.sdk_agents:plain",
    "typed": "tests.sdk_agents:typed",
    "calculating": "tests.sdk_tool_agents:calculating",
}

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
def shout(text: str) -> str:
    """Upper-case `text`."""
    return text.upper()


#: An inline function tool: it would run inside the workflow, so kernos refuses the agent.
inline = Agent(name="inline", instructions="Shout.", tools=[shout])

#: Handoffs are not supported yet: refused by name.
triage = Agent(name="triage", instructions="Hand off.", handoffs=[plain])

#: Not an agent of any kind.
not_an_agent = {"name": "plain"}
