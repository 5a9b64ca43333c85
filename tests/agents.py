"""Agents used by the tests; imported inside the workflow sandbox like any user's agent."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import Priority
from temporalio.exceptions import ActivityError

from kernos import (
    AccessDenied,
    Agent,
    ContextTooLong,
    ConversationRef,
    Done,
    KernosError,
    StepAgent,
)
from kernos.kernel.scheduler import priority_of
from kernos.kernel.syscall_table import SYSCALLS, retry_policy
from kernos.kernel.syscalls import (
    FileVersion,
    LLMContinuation,
    LLMRequest,
    LLMResponse,
    Message,
    RunOutcome,
    StorageWrite,
    TokenUsage,
    ToolCallRequest,
    ToolResult,
)


class EchoAgent(Agent):
    """One syscall; returns the model's text."""

    name = "echo"

    async def run(self, task: str) -> str:
        reply = await self.llm.chat([{"role": "user", "content": task}])
        return reply.text


class StepsAgent(Agent):
    """As many syscalls as the task says, one after the other."""

    name = "steps"

    async def run(self, task: str) -> str:
        replies = []
        for step in range(int(task)):
            reply = await self.llm.chat([{"role": "user", "content": f"step {step}"}])
            replies.append(reply.text)
        return " | ".join(replies)


class ForbiddenModelAgent(Agent):
    """Asks for a model the policy denies, and reports the denial."""

    name = "forbidden"

    async def run(self, task: str) -> str:
        try:
            await self.llm.chat([{"role": "user", "content": task}], model="secret")
        except AccessDenied as exc:
            return f"denied: {exc}"
        return "allowed"


class BuggyAgent(Agent):
    """Fails with a plain Python error after one syscall."""

    name = "buggy"

    async def run(self, task: str) -> str:
        await self.llm.chat([{"role": "user", "content": task}])
        raise ZeroDivisionError("the agent divided by zero")


class FinishesItselfAgent(Agent):
    """Malicious: marks its own run finished, then tries another syscall."""

    name = "self-finisher"

    async def run(self, task: str) -> str:
        await workflow.execute_activity(
            "run.finish",
            RunOutcome(
                status="completed",
                output="faked",
                usage=TokenUsage(input_tokens=10**9, output_tokens=10**9),
            ),
            task_queue=task,
            **honest(self, "run.finish"),
        )
        reply = await self.llm.chat([{"role": "user", "content": "after the end"}])
        return reply.text


class City(BaseModel):
    """What ExtractAgent asks the model for."""

    name: str
    country: str
    population: int


class ExtractAgent(Agent):
    """Asks for JSON constrained to City's schema; returns it as JSON text."""

    name = "extract"

    async def run(self, task: str) -> str:
        # Greedy: a sampled answer can ramble inside a string past any token limit.
        city = await self.llm.structured(
            [{"role": "user", "content": f"Describe {task} as JSON."}],
            City,
            max_tokens=128,
            temperature=0.0,
        )
        return city.model_dump_json()


class ShortStepsAgent(Agent):
    """Like StepsAgent, with answers capped at 48 tokens (for a real, rambling model)."""

    name = "short-steps"

    async def run(self, task: str) -> str:
        replies = []
        for step in range(int(task)):
            reply = await self.llm.chat(
                [{"role": "user", "content": f"Count to {step + 3}."}], max_tokens=48
            )
            replies.append(reply.text)
        return " | ".join(replies)


class LongAnswerAgent(Agent):
    """One long greedy generation; reports how much of it came from an earlier attempt."""

    name = "long-answer"

    async def run(self, task: str) -> str:
        reply = await self.llm.chat(
            [{"role": "user", "content": task}], max_tokens=160, temperature=0.0
        )
        return f"{reply.resumed_from} {reply.usage.output_tokens} {reply.text}"


class LengthAgent(Agent):
    """One greedy generation of the length the task starts with: `"<max_tokens> <prompt>"`."""

    name = "length"

    async def run(self, task: str) -> str:
        limit, _, prompt = task.partition(" ")
        reply = await self.llm.chat(
            [{"role": "user", "content": prompt}], max_tokens=int(limit), temperature=0.0
        )
        return f"{reply.usage.output_tokens} {reply.text}"


def honest(agent: Agent, syscall: str) -> dict[str, Any]:
    """The options an honest dispatcher gives `syscall`; hostile agents forge the rest."""
    run = agent.llm._dispatcher.run
    entry = SYSCALLS[syscall]
    return {
        "priority": priority_of(run.spec, run.scheduling),
        "start_to_close_timeout": entry.start_to_close(run.limits),
        "heartbeat_timeout": entry.heartbeat(run.limits),
        "retry_policy": retry_policy(run.limits),
    }


class HijackAgent(Agent):
    """Malicious: continues a generation by name, as `"<llm queue> <model> <generation>"`."""

    name = "hijack"

    async def run(self, task: str) -> str:
        queue, model, generation = task.split(" ")
        try:
            reply = await workflow.execute_activity(
                "llm.continue",
                LLMContinuation(model=model, generation=generation),
                result_type=LLMResponse,
                task_queue=queue,
                **honest(self, "llm.continue"),
            )
        except ActivityError as exc:
            return f"denied: {exc.cause}"
        return f"continued: {reply.text}"


class Diary(BaseModel):
    """DiaryAgent's state: everything it knows between steps."""

    conversation: ConversationRef
    entries: int
    replies: list[str] = []


class DiaryAgent(StepAgent[Diary]):
    """A long-lived agent: one diary entry per step in one conversation, `task` entries."""

    name = "diary"
    state_model = Diary

    async def start(self, task: str) -> Diary:
        conversation = await self.conversations.open(system="You keep a diary.")
        return Diary(conversation=conversation, entries=int(task))

    async def step(self, state: Diary) -> Diary | Done:
        number = len(state.replies)
        reply = await self.llm.say(
            state.conversation, f"entry {number}: " + "busy day " * 8, max_tokens=24
        )
        replies = [*state.replies, reply.text]
        if len(replies) == state.entries:
            return Done(output="\n".join(replies))
        return state.model_copy(update={"replies": replies})


class Race(BaseModel):
    """RacerAgent's state: the races run so far, of how many."""

    races: int
    of: int


class RacerAgent(StepAgent[Race]):
    """Races four listings of its files at each step, takes the first answer, cancels the rest:
    honest code that leaves cancelled syscalls behind (as `wait_for` timeouts do), `task` steps,
    continuing as new between steps when its limits say so."""

    name = "racer"
    state_model = Race

    async def start(self, task: str) -> Race:
        return Race(races=0, of=int(task))

    async def step(self, state: Race) -> Race | Done:
        listings = [asyncio.ensure_future(self.storage.list()) for _ in range(4)]
        await workflow.wait(listings, return_when=asyncio.FIRST_COMPLETED)
        for listing in listings:
            listing.cancel()
        await asyncio.gather(*listings, return_exceptions=True)
        state = state.model_copy(update={"races": state.races + 1})
        if state.races == state.of:
            return Done(output=f"{state.races} races won")
        return state


class Tally(BaseModel):
    """CounterAgent's state: the replies so far, and how many it wants."""

    replies: list[str] = []
    of: int


class CounterAgent(StepAgent[Tally]):
    """One model call per step, `task` steps, continuing as new when its limits say so."""

    name = "counter"
    state_model = Tally

    async def start(self, task: str) -> Tally:
        return Tally(of=int(task))

    async def step(self, state: Tally) -> Tally | Done:
        reply = await self.llm.chat([{"role": "user", "content": f"step {len(state.replies)}"}])
        state = state.model_copy(update={"replies": [*state.replies, reply.text]})
        if len(state.replies) == state.of:
            return Done(output=" | ".join(state.replies))
        return state


class CatcherAgent(Agent):
    """Writes the file the task names and reports, as JSON, the kernel error it caught."""

    name = "catcher"

    async def run(self, task: str) -> str:
        try:
            await self.storage.write(task, "content")
        except KernosError as exc:
            caught = {"type": type(exc).__name__, "message": str(exc)}
            return json.dumps({**caught, "fields": exc.field_values()})
        return "no error"


class ChatterAgent(Agent):
    """One turn in a conversation: a new one, or (`"<id> <model> <text>"`) someone else's."""

    name = "chatter"

    async def run(self, task: str) -> str:
        if task.startswith("conv-"):
            conversation_id, model, text = task.split(" ", 2)
            conversation = ConversationRef(id=conversation_id, model=model)
        else:
            conversation, text = await self.conversations.open(system="Be brief."), task
        try:
            reply = await self.llm.say(conversation, text, max_tokens=16)
        except (AccessDenied, ContextTooLong) as exc:
            return f"{type(exc).__name__}: {exc}"
        return f"{conversation.id} {reply.context_tokens} {reply.text}"


class PausingAgent(Agent):
    """Two calls, `task` seconds apart (a durable timer in between)."""

    name = "pausing"

    async def run(self, task: str) -> str:
        first = await self.llm.chat([{"role": "user", "content": "one"}], max_tokens=8)
        await asyncio.sleep(float(task))
        second = await self.llm.chat([{"role": "user", "content": "two"}], max_tokens=8)
        return f"{first.text} | {second.text}"


class DawdlerAgent(Agent):
    """Busy in its workflow code for `task` seconds at its first activation, then answers:
    slow (a cold import on a busy host), not stuck."""

    name = "dawdler"

    async def run(self, task: str) -> str:
        with workflow.unsafe.sandbox_unrestricted():
            until = time.monotonic() + float(task)
            while time.monotonic() < until:
                pass
        return "awake"


class CruncherAgent(Agent):
    """After a timer, computes in one workflow task until `task` seconds have passed on the
    wall, and says how much CPU that took: honest work, longer than a timeout on the wall only
    where its process waits for a CPU (uncrowded, the CPU it uses is the wall time)."""

    name = "cruncher"

    async def run(self, task: str) -> str:
        await workflow.sleep(timedelta(seconds=3))
        with workflow.unsafe.sandbox_unrestricted():
            began, used = time.monotonic(), time.thread_time()
            while time.monotonic() - began < float(task):
                pass
            cpu = time.thread_time() - used
        return f"{cpu:.2f}"


class MemoAgent(Agent):
    """Runs a script of memory syscalls (the task, as JSON) and returns each one's result.

    Each step is `{"op": "add" | "search" | "get" | "update" | "delete" | "list", ...}` with
    the SDK method's arguments (`"storage.write"` and so on for files; `"tools.call"` with
    `"tool"` and the tool's arguments, `"tools.loop"`), or
    `{"op": "say", "text": ...}`, a turn in a conversation.
    `"$N"` as an id means the id the Nth step returned. A kernel error becomes
    `{"error": type, "message": ...}`, so one script can probe refusals too.
    """

    name = "memo"

    async def run(self, task: str) -> str:
        results: list[Any] = []
        conversation: ConversationRef | None = None
        for step in json.loads(task):
            args = dict(step)
            op = args.pop("op")
            if op == "say":  # a turn of a conversation, to search later as a past one
                conversation = conversation or await self.conversations.open()
                results.append((await self.llm.say(conversation, args["text"])).text)
                continue
            if isinstance(args.get("id"), str) and args["id"].startswith("$"):
                args["id"] = results[int(args["id"][1:])]["id"]
            manager, _, method = op.rpartition(".")
            try:
                result: Any
                if op == "tools.call":  # the tool's name is positional: arguments may use "name"
                    result = await self.tools.call(args.pop("tool"), args)
                else:
                    target = {"storage": self.storage, "llm": self.llm, "tools": self.tools}.get(
                        manager, self.memory
                    )
                    result = await getattr(target, method)(**args)
            except KernosError as exc:
                results.append({"error": type(exc).__name__, "message": str(exc)})
                continue
            if isinstance(result, list):
                results.append([item.model_dump(mode="json") for item in result])
            elif isinstance(result, BaseModel):
                results.append(result.model_dump(mode="json"))
            else:
                results.append(result)
        return json.dumps(results)


class ForgerAgent(Agent):
    """Hostile: schedules one syscall activity itself, with whatever options its task names.

    The task is JSON: `syscall` (default `llm.chat`), `model`, `queue`, `priority` (Temporal's
    fields), `start_to_close_s`, `heartbeat_s`, `retry` (RetryPolicy's fields in seconds),
    `tool`, `arguments_instead` (malformed arguments). Whatever it leaves out is what an honest
    dispatcher would send. Returns `ok: <text>` or `refused <type>: <message>`.
    """

    name = "forger"

    async def run(self, task: str) -> str:
        forged: dict[str, Any] = json.loads(task)
        run = self.llm._dispatcher.run
        syscall = forged.get("syscall", "llm.chat")
        model = forged.get("model", run.spec.model)
        request: Any
        result_type: type[BaseModel]
        if syscall == "tool.call":
            request = ToolCallRequest(name=forged["tool"], arguments=forged.get("arguments", "{}"))
            queue, result_type = f"{run.tool_queue_prefix}{forged['tool']}", ToolResult
        elif syscall == "storage.write":
            request = StorageWrite(path="forged.txt", content="forged")
            queue, result_type = run.kernel_task_queue, FileVersion
        else:
            request = LLMRequest(model=model, messages=[Message(role="user", content="hi")])
            queue, result_type = f"{run.llm_queue_prefix}{model}", LLMResponse
        options = honest(self, syscall)
        if "priority" in forged:
            options["priority"] = Priority(**forged["priority"])
        if "start_to_close_s" in forged:
            options["start_to_close_timeout"] = timedelta(seconds=forged["start_to_close_s"])
        if "heartbeat_s" in forged:
            options["heartbeat_timeout"] = timedelta(seconds=forged["heartbeat_s"])
        if "retry" in forged:
            retry = {**forged["retry"]}
            for field in ("initial_interval", "maximum_interval"):
                if field in retry:
                    retry[field] = timedelta(seconds=retry[field])
            options["retry_policy"] = dataclasses.replace(options["retry_policy"], **retry)
        # Two arguments, the request as a plain dict and a string: what no syscall takes.
        args = [request.model_dump(), "extra"] if forged.get("arguments_instead") else [request]
        try:
            reply = await workflow.execute_activity(
                syscall,
                args=args,
                result_type=result_type,
                task_queue=forged.get("queue", queue),
                **options,
            )
        except ActivityError as exc:
            cause = exc.cause
            return f"refused {getattr(cause, 'type', None)}: {getattr(cause, 'message', cause)}"
        return f"ok: {getattr(reply, 'text', None) or getattr(reply, 'content', reply)}"


AGENTS = {
    "echo": "tests.agents:EchoAgent",
    "steps": "tests.agents:StepsAgent",
    "forbidden": "tests.agents:ForbiddenModelAgent",
    "buggy": "tests.agents:BuggyAgent",
    "planner": "kernos.examples.planner:PlannerAgent",
    "extract": "tests.agents:ExtractAgent",
    "short-steps": "tests.agents:ShortStepsAgent",
    "long-answer": "tests.agents:LongAnswerAgent",
    "length": "tests.agents:LengthAgent",
    "hijack": "tests.agents:HijackAgent",
    "diary": "tests.agents:DiaryAgent",
    "racer": "tests.agents:RacerAgent",
    "counter": "tests.agents:CounterAgent",
    "catcher": "tests.agents:CatcherAgent",
    "chatter": "tests.agents:ChatterAgent",
    "pausing": "tests.agents:PausingAgent",
    "dawdler": "tests.agents:DawdlerAgent",
    "cruncher": "tests.agents:CruncherAgent",
    "memo": "tests.agents:MemoAgent",
    "other-memo": "tests.agents:MemoAgent",
    "forger": "tests.agents:ForgerAgent",
}

#: Agents written with the OpenAI Agents SDK (tests/sdk_agents.py), by path: apart from AGENTS,
#: and named here so that importing them does not load the SDK into a test's process.
SDK_AGENTS = {
    "plain": "tests.sdk_agents:plain",
    "typed": "tests.sdk_agents:typed",
    "calculating": "tests.sdk_tool_agents:calculating",
    "shouting": "tests.sdk_agents:shouting",
    "peeking": "tests.sdk_agents:peeking",
    "triage": "tests.sdk_agents:triage",
    "launching": "tests.sdk_agents:launching",
    "streaming": "tests.sdk_tool_agents:Streaming",
    "adding": "tests.sdk_tool_agents:adding",
    "overriding": "tests.sdk_tool_agents:Overriding",
}

#: LangGraph / LangChain graphs, registered by path (kernos.adapters.langgraph).
GRAPH_AGENTS = {
    "graph-closure": "tests.graph_agents:closure",
    "graph-shouting": "tests.graph_agents:shouting",
    "graph-peeking": "tests.graph_agents:peeking",
    "graph-blocking": "tests.graph_agents:blocking",
    "graph-launching": "tests.graph_agents:launching",
    "graph-calculating": "tests.graph_tool_agents:calculating",
    "graph-adding": "tests.graph_tool_agents:adding",
    "graph-naming": "tests.graph_tool_agents:naming",
    "graph-streaming": "tests.graph_tool_agents:Streaming",
    "graph-briefly": "tests.graph_first_import:briefly",
}

#: Pydantic AI agents, registered by path (kernos.adapters.pydantic_ai).
TYPED_AGENTS = {
    "typed-plain": "tests.typed_agents:plain",
    "typed-launching": "tests.typed_agents:launching",
    "typed-peeking": "tests.typed_agents:peeking",
    "typed-asking": "tests.typed_agents:asking",
    "typed-calculating": "tests.typed_tool_agents:calculating",
    "typed-adding": "tests.typed_tool_agents:adding",
    "typed-streaming": "tests.typed_tool_agents:Streaming",
    "typed-greeting": "tests.typed_tool_agents:Greeting",
    "typed-driving": "tests.typed_tool_agents:Driving",
}
