"""bench/frameworks.py's workload: one tool-using OpenAI Agents SDK agent, as each side runs it.

The agent computes with a calculator, then answers: two model calls and one tool call a task.
Run directly and by Temporal's plugin, its calculator is an `@function_tool` of its own; on
kernos it is the kernel's (`framework_kernos_agent.py`: that module imports kernos, which the
plugin's workflow sandbox need not).
"""

from __future__ import annotations

from agents import Agent, ModelSettings, Runner, function_tool
from temporalio import workflow

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
TASK = "What is 12 * 34?"
SETTINGS = ModelSettings(temperature=0.0, max_tokens=32)


@function_tool
async def calculator(expression: str) -> str:
    """Evaluate a product of two whole numbers, `a * b`."""
    left, _, right = expression.partition("*")
    return str(int(left) * int(right))


def direct_agent(model: str) -> Agent[None]:
    """The agent as the framework runs it: its own tool, the model by name."""
    return Agent(
        name="calc", instructions=INSTRUCTIONS, tools=[calculator], model=model,
        model_settings=SETTINGS,
    )  # fmt: skip


@workflow.defn
class PluginTask:
    """Temporal's plugin side: the same agent, its model calls activities of the plugin."""

    @workflow.run
    async def run(self, task: str, model: str) -> str:
        return str((await Runner.run(direct_agent(model), task)).final_output)
