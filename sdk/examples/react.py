"""The example tool-using agent: reason, call tools, read their results, answer (ReAct)."""

from __future__ import annotations

from kernos.agent import Agent
from kernos.kernel.errors import ContextTooLong

SYSTEM = (
    "You are a careful assistant that uses tools: the calculator for arithmetic, read_file and "
    "write_file for the files you keep. When the results are in, answer briefly."
)


class ReActAgent(Agent):
    """Calls the kernel's built-in tools until it can answer; returns the answer and its trail."""

    name = "react"
    description = "Answers with the help of the calculator and its files."

    async def run(self, task: str) -> str:
        """Loop: the model calls tools, the kernel runs them, the model reads the results."""
        try:
            result = await self.tools.loop(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}],
                tools=["calculator", "read_file", "write_file"],
                max_rounds=3,
                start_with_tool=True,  # a small model answers from memory unless made to look
                max_tokens=256,
                temperature=0,
            )
        except ContextTooLong as exc:  # the model's window filled before it answered
            return f"(no answer: {exc})"
        trail = [
            f"{r.name} -> {r.content if r.ok else f'error ({r.error_type}): {r.content}'}"
            for r in result.results
        ]
        return "\n".join([*trail, result.reply.text]) if trail else result.reply.text
