"""bench/frameworks.py's Pydantic AI agent on kernos: the same agent, on kernos's model and tool.

Self-contained: a pool's confined process sees an agent's top-level module, not its folder,
so the instructions and settings are `framework_typed.py`'s, repeated (bench/frameworks.py
checks that they match).
"""

from __future__ import annotations

from pydantic_ai import Agent, ModelSettings

from kernos.adapters.pydantic_ai import KernosModel, tools

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
SETTINGS = ModelSettings(temperature=0.0, max_tokens=32)

calc = Agent(KernosModel(), tools=tools("calculator"), instructions=INSTRUCTIONS,
             model_settings=SETTINGS, name="calc")  # fmt: skip
