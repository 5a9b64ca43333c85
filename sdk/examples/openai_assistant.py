"""The example tool-using task, written with the OpenAI Agents SDK and run on kernos as it is.

Register it (`[agents] assistant = "kernos.examples.openai_assistant:assistant"`, as `make demo
DEMO_AGENT=assistant` does) and run it like any agent: `kernos run assistant "What is 12 * 34?
Then save the answer to notes/answer.md."`. The only kernos import is the binding of the
kernel's tools; the model is whatever the run's is.
"""

from __future__ import annotations

from agents import Agent, ModelSettings, StopAtTools

from kernos.adapters.openai_agents import tools

assistant = Agent(
    name="assistant",
    instructions=(
        "You are a careful assistant. Use the calculator for arithmetic and write_file to save "
        "what you are asked to save. When the work is done, answer briefly."
    ),
    tools=tools("calculator", "write_file"),
    # A small model answers from memory unless made to look: the first turn must call a tool
    # (the SDK lets the model choose again after it has).
    model_settings=ModelSettings(temperature=0.0, max_tokens=256, tool_choice="required"),
    # Saving the answer is the end of the task: its result is the run's output.
    tool_use_behavior=StopAtTools(stop_at_tool_names=["write_file"]),
)
