"""The example tool-using task, written with Pydantic AI and run on kernos as it is.

Register it (`[agents] typed-assistant = "kernos.examples.pydantic_ai_assistant:assistant"`, as
`make demo DEMO_AGENT=typed-assistant` does) and run it like any agent: `kernos run
typed-assistant "What is 12 * 34? Then save the answer to notes/answer.md."`. The only kernos
imports are its model (each call an `llm.chat` syscall; the model is the run's) and the binding
of the kernel's tools.
"""

from __future__ import annotations

from pydantic_ai import Agent, ModelSettings, RunContext
from pydantic_ai.messages import ToolReturnPart

from kernos.adapters.pydantic_ai import KernosModel, tools

#: A small model may call tools over and over: after this many model calls it must answer.
TURNS = 4


def _tools_returned(ctx: RunContext[None]) -> set[str]:
    return {
        part.tool_name
        for message in ctx.messages
        for part in message.parts
        if isinstance(part, ToolReturnPart)
    }


def settings(ctx: RunContext[None]) -> ModelSettings:
    """The first turn must call a tool; once the answer is saved (or turns ran out), answer.

    A small model answers from memory unless made to look.
    """
    done = _tools_returned(ctx)
    base = ModelSettings(temperature=0.0, max_tokens=256)
    if not done:
        return ModelSettings(**base, tool_choice="required")
    if "write_file" in done or ctx.run_step >= TURNS:
        return ModelSettings(**base, tool_choice="none")
    return base


assistant = Agent(
    KernosModel(),
    tools=tools("calculator", "write_file"),
    instructions=(
        "You are a careful assistant. Use the calculator for arithmetic and write_file to save "
        "what you are asked to save. When the work is done, answer briefly."
    ),
    model_settings=settings,
    name="typed-assistant",
)
