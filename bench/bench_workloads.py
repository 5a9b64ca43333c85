"""Workloads for bench/syscall_overhead.py: the same loop of N calls, through kernos and bare."""

from __future__ import annotations

import time
from datetime import timedelta

from temporalio import activity, workflow

from kernos import Agent
from kernos.kernel import visibility
from kernos.kernel.llm.base import Placement, Progress, PromptSize, Snapshot
from kernos.kernel.syscalls import LLMRequest, LLMResponse, Message, TokenUsage


class LoopAgent(Agent):
    """`task` no-op LLM syscalls in a row."""

    name = "loop"

    async def run(self, task: str) -> str:
        for _ in range(int(task)):
            await self.llm.chat([{"role": "user", "content": "x"}])
        return "done"


@workflow.defn(name="RawLoop")
class RawLoop:
    """The same loop as plain Temporal: a workflow calling a no-op activity N times."""

    @workflow.run
    async def run(self, n: int, activity_queue: str | None) -> str:
        """`n` activities on `activity_queue` (None: the workflow's own, eagerly dispatched)."""
        request = LLMRequest(model="noop", messages=[Message(role="user", content="x")])
        for _ in range(n):
            await workflow.execute_activity(
                "raw.noop",
                request,
                task_queue=activity_queue,
                result_type=LLMResponse,
                start_to_close_timeout=timedelta(seconds=30),
                heartbeat_timeout=timedelta(seconds=30),
            )
        return "done"


@workflow.defn(name="RawStatus")
class RawStatus:
    """A bare workflow that does what a run does with kernos's search attributes: started with
    them (bench/search_attribute_cache.py), it sets its status once and ends."""

    @workflow.run
    async def run(self) -> str:
        workflow.upsert_search_attributes([visibility.STATUS.value_set("completed")])
        return "done"


@activity.defn(name="raw.noop")
async def raw_noop(request: LLMRequest) -> LLMResponse:
    """Answers at once, like the no-op backend."""
    return LLMResponse(text="", model=request.model, usage=TokenUsage())


class NoopBackend:
    """An LLM backend that answers at once: what is left is the kernel's own cost."""

    async def chat(
        self,
        request: LLMRequest,
        progress: Progress,
        resume: Snapshot | None = None,
        placement: Placement | None = None,
    ) -> LLMResponse:
        """Return an empty answer."""
        return LLMResponse(text="", model=request.model, usage=TokenUsage())

    async def measure(self, request: LLMRequest) -> PromptSize:
        """Nothing is counted."""
        return PromptSize()

    async def aclose(self) -> None:
        """Nothing to close."""


class OneChatAgent(Agent):
    """One LLM syscall of a fixed length: the unit of bench/llm_throughput.py."""

    name = "one-chat"

    async def run(self, task: str) -> str:
        reply = await self.llm.chat(
            [{"role": "user", "content": task}], max_tokens=64, temperature=0.8, seed=1
        )
        return str(reply.usage.output_tokens)


class SizedChatAgent(Agent):
    """One LLM syscall of the length the task starts with: `"<max_tokens> <prompt>"`."""

    name = "sized"

    async def run(self, task: str) -> str:
        limit, _, prompt = task.partition(" ")
        reply = await self.llm.chat([{"role": "user", "content": prompt}], max_tokens=int(limit))
        return str(reply.usage.output_tokens)


REACT_REPLY_TOKENS = 32

#: The shared instructions every ReAct-shaped agent starts from: a prefix servers can cache.
REACT_SYSTEM = "You are a careful agent. Think, act, observe. " + " ".join(
    f"Rule {i}: check the tool output before acting again." for i in range(40)
)


def observation(turn: int) -> str:
    """A tool's output, as long as a search result or a file excerpt (about 150 words)."""
    return f"Observation {turn}: " + " ".join(f"result{turn}-{i} matched" for i in range(75))


class ReActShapedAgent(Agent):
    """`"<turns> <task>"`: several calls over one growing prefix, as a ReAct loop makes them."""

    name = "react"

    async def run(self, task: str) -> str:
        turns, _, question = task.partition(" ")
        messages = [
            {"role": "system", "content": REACT_SYSTEM},
            {"role": "user", "content": question},
        ]
        tokens = 0
        for turn in range(int(turns)):
            reply = await self.llm.chat(messages, max_tokens=REACT_REPLY_TOKENS)
            tokens += reply.usage.output_tokens
            messages += [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": observation(turn)},
            ]
        return str(tokens)


class CallsAgent(Agent):
    """`"<calls> <max_tokens>"`: that many LLM syscalls one after the other."""

    name = "calls"

    async def run(self, task: str) -> str:
        calls, limit = (int(word) for word in task.split())
        tokens = 0
        for call in range(calls):
            reply = await self.llm.chat(
                [{"role": "user", "content": f"call {call}"}], max_tokens=limit
            )
            tokens += reply.usage.output_tokens
        return str(tokens)


class CostAgent(Agent):
    """`"<calls>\n<max tokens>\n<system message>\n<prompt>"`: that many model calls at
    temperature 0, in turn (bench/run_cost.py's kernos side).
    """

    name = "cost"

    async def run(self, task: str) -> str:
        calls, tokens, system, prompt = task.split("\n", 3)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        text = ""
        for _ in range(int(calls)):
            reply = await self.llm.chat(messages, max_tokens=int(tokens), temperature=0.0)
            text = reply.text
        return text


class BurnerAgent(Agent):
    """A greedy neighbour: `task` turns of 1.5 s of pure CPU in workflow code, a timer between.

    Each turn stays under the SDK's 2 s deadlock timeout, so nothing stops it: it is what a
    pool's CPU share is for.
    """

    name = "burner"

    async def run(self, task: str) -> str:
        for _ in range(int(task)):
            with workflow.unsafe.sandbox_unrestricted():
                until = time.monotonic() + 1.5
                while time.monotonic() < until:
                    pass
            await workflow.sleep(timedelta(milliseconds=10))
        return "burnt"


class ThreadedBurnerAgent(Agent):
    """A greedy neighbour on every core: `task` turns in which four threads hash for 1.5 s
    (hashlib lets go of the GIL, so one process takes as many cores as it has threads), a
    timer between. What a pool's CPU share is for where one pool's process can take more than
    one core."""

    name = "threaded-burner"

    async def run(self, task: str) -> str:
        for _ in range(int(task)):
            with workflow.unsafe.sandbox_unrestricted():
                _hash_in_threads(threads=4, seconds=1.5)
            await workflow.sleep(timedelta(milliseconds=10))
        return "burnt"


def _hash_in_threads(threads: int, seconds: float) -> None:
    """Hash on `threads` threads for `seconds`; the caller's thread (outside the sandbox's
    restrictions, which its new threads do not inherit) keeps the time."""
    import hashlib
    import os
    import threading

    data = os.urandom(8 << 20)
    done = [False]  # the threads may touch nothing the sandbox restricts, not even an Event

    def burn() -> None:
        while not done[0]:
            hashlib.sha256(data).digest()

    workers = [threading.Thread(target=burn) for _ in range(threads)]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    done[0] = True
    for worker in workers:
        worker.join()


class HolderAgent(Agent):
    """A neighbour that holds its workflow tasks: `task` turns of 1.5 s blocked in workflow
    code (a synchronous call), a timer between; what a pool's share of the slots is for."""

    name = "holder"

    async def run(self, task: str) -> str:
        for _ in range(int(task)):
            with workflow.unsafe.sandbox_unrestricted():
                time.sleep(1.5)  # noqa: ASYNC251 - the point: the task is held
            await workflow.sleep(timedelta(milliseconds=10))
        return "held"


class WaiterAgent(Agent):
    """Waits `task` seconds on a timer, then makes one no-op syscall: a run that is open."""

    name = "waiter"

    async def run(self, task: str) -> str:
        await workflow.sleep(timedelta(seconds=float(task)))
        await self.llm.chat([{"role": "user", "content": "x"}])
        return "waited"
