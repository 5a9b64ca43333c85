"""bench/frameworks.py's agent written with kernos's own SDK: the same task as
`framework_plain.py`'s loop, the kernel's calculator and its model calls syscalls.

Self-contained: a pool's confined process sees an agent's top-level module, not its folder,
so the instructions are `framework_plain.py`'s, repeated (bench/frameworks.py checks that they
match).
"""

from __future__ import annotations

import kernos

INSTRUCTIONS = "Use the calculator for arithmetic, then answer with the number."
MAX_TOKENS = 32


class Calc(kernos.Agent):
    """Computes with the kernel's calculator, then answers."""

    name = "calc"

    async def run(self, task: str) -> str:
        """The model's answer, after the calculator's."""
        messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": task}]
        result = await self.tools.loop(
            messages, tools=["calculator"], max_tokens=MAX_TOKENS, temperature=0.0
        )
        return result.reply.text
