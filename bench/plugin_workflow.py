"""bench/run_cost.py's plugin side: an OpenAI Agents SDK agent in a workflow of its own module.

(The workflow sandbox imports a workflow's module again; a script's `__main__` cannot be.)
"""

from __future__ import annotations

from agents import Agent, ModelSettings, Runner
from cost_prompt import PROMPT, SYSTEM, TOKENS
from temporalio import workflow


@workflow.defn
class PluginCalls:
    """The plugin's side: an Agents SDK agent run `calls` times in one workflow."""

    @workflow.run
    async def run(self, calls: int, model: str) -> str:
        agent = Agent(
            name="cost",
            instructions=SYSTEM,
            model=model,
            model_settings=ModelSettings(max_tokens=TOKENS, temperature=0.0),
        )
        output = ""
        for _ in range(calls):
            output = str((await Runner.run(agent, PROMPT)).final_output)
        return output
