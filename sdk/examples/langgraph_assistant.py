"""The example tool-using task, written with LangChain's `create_agent` and run on kernos as it is.

Register it (`[agents] graph-assistant = "kernos.examples.langgraph_assistant:assistant"`, as
`make demo DEMO_AGENT=graph-assistant` does) and run it like any agent: `kernos run
graph-assistant "What is 12 * 34? Then save the answer to notes/answer.md."`. The only kernos
imports are its chat model (each call an `llm.chat` syscall; the model is the run's) and the
binding of the kernel's tools.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import (
    AgentMiddleware,
    ModelCallLimitMiddleware,
    ModelRequest,
    ModelResponse,
    wrap_model_call,
)
from langchain_core.messages import ToolMessage

from kernos.adapters.langgraph import KernosChatModel, tools


@wrap_model_call
async def look_first(
    request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse]]
) -> ModelResponse:
    """The first turn must call a tool; after that, the model chooses.

    A small model answers from memory unless made to look.
    """
    if not any(isinstance(message, ToolMessage) for message in request.messages):
        request = request.override(tool_choice="any")
    return await handler(request)


calculator, write_file = tools("calculator", "write_file")
# Saving the answer is the end of the task: its result is the run's output.
write_file.return_direct = True

#: A small model may call tools over and over: four turns, then the run ends with the last.
guards: list[AgentMiddleware[Any, None, Any]] = [
    look_first,
    ModelCallLimitMiddleware(run_limit=4, exit_behavior="end"),
]

assistant = create_agent(
    model=KernosChatModel(temperature=0.0, max_tokens=256),
    tools=[calculator, write_file],
    system_prompt=(
        "You are a careful assistant. Use the calculator for arithmetic and write_file to save "
        "what you are asked to save. When the work is done, answer briefly."
    ),
    middleware=guards,
    name="graph-assistant",
)
