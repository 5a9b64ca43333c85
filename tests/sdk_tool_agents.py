"""An OpenAI Agents SDK agent with the kernel's tools: binding them is the one kernos import."""

from __future__ import annotations

from agents import Agent

from kernos.adapters.openai_agents import tools

calculating = Agent(
    name="calculating",
    instructions="Use the calculator for arithmetic, then answer with the number.",
    tools=tools("calculator"),
)
