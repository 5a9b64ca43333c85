"""The example agent: plan first, then answer, in two LLM syscalls."""

from __future__ import annotations

from kernos.agent import Agent


class PlannerAgent(Agent):
    """Asks the model for a short plan, then for the answer that follows it."""

    name = "planner"
    description = "Plans in one LLM call, answers in a second."

    async def run(self, task: str) -> str:
        """Plan, then answer."""
        system = {"role": "system", "content": "You are a careful assistant. Be brief."}
        plan = await self.llm.chat(
            [system, {"role": "user", "content": f"Write a three-step plan for: {task}"}],
            max_tokens=128,
        )
        answer = await self.llm.chat(
            [
                system,
                {"role": "user", "content": task},
                {"role": "assistant", "content": f"My plan:\n{plan.text}"},
                {"role": "user", "content": "Follow the plan and give the final answer."},
            ],
            max_tokens=256,
        )
        return answer.text
