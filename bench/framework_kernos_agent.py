"""bench/frameworks.py's agent on kernos: the same SDK agent, with the kernel's calculator.

Self-contained: a pool's confined process sees an agent's top-level module, not its folder,
so the instructions and settings are `framework_agents.py`'s, repeated (bench/frameworks.py
checks that they match).
"""

from __future__ import annotations

from agents import Agent, ModelSettings

from kernos.adapters.openai_agents import tools

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
SETTINGS = ModelSettings(temperature=0.0, max_tokens=32)

calc = Agent(
    name="calc", instructions=INSTRUCTIONS, tools=tools("calculator"), model_settings=SETTINGS
)
