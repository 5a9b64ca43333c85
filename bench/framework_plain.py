"""bench/frameworks.py's workload without a framework: the same task as a plain function-calling
loop on the `openai` client, the baseline that kernos's own `Agent` (`framework_kernos_own.py`)
is measured against.

The model is offered the calculator, its call is answered, and the model answers: two model
calls and one tool call a task, each to the next server in turn.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from openai import AsyncOpenAI

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
MAX_TOKENS = 32
#: The calculator as the model is told it (the kernel's registered tool takes the same).
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate a product of two whole numbers, `a * b`.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def calculator(expression: str) -> str:
    """Evaluate a product of two whole numbers, `a * b`."""
    left, _, right = expression.partition("*")
    return str(int(left) * int(right))


class PlainLoop:
    """The function-calling loop, each model call to the next server in turn."""

    def __init__(self, base_urls: list[str], model: str) -> None:
        clients = [AsyncOpenAI(base_url=f"{url}/v1", api_key="none") for url in base_urls]
        self._clients: Iterator[AsyncOpenAI] = itertools.cycle(clients)
        self._model = model

    async def run(self, task: str) -> str:
        """The model's answer to `task`, its calculator calls answered on the way."""
        messages: list[Any] = [
            {"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": task},
        ]  # fmt: skip
        while True:
            reply = await next(self._clients).chat.completions.create(
                model=self._model, messages=messages, tools=[CALCULATOR],  # type: ignore[list-item]
                temperature=0.0, max_tokens=MAX_TOKENS,
            )  # fmt: skip
            message = reply.choices[0].message
            if not message.tool_calls:
                return message.content or ""
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                arguments = json.loads(call.function.arguments or "{}")  # type: ignore[union-attr]
                output = calculator(str(arguments.get("expression", "")))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
