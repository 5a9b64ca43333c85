"""A kernel of fakes for the fast tier: activities under the syscall table's names, on the
queues a run's input names, answering as a test says; and a run of `AgentRun` started on them.

The agent worker is real (`AgentRun` in the workflow sandbox, as an agent worker runs it); only
the kernel's side is replaced, so a test sees what a run does with what the kernel answers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from kernos.activities.failures import to_application_error
from kernos.kernel import errors, scheduler, visibility
from kernos.kernel.syscall_table import AGENT_RUN, APPROVAL_ASK, LLM_CHAT, STORAGE_WRITE, TOOL_CALL
from kernos.kernel.syscalls import (
    ApprovalAsk,
    ApprovalGiven,
    FileVersion,
    LLMRequest,
    LLMResponse,
    RunInput,
    RunResult,
    RunSpec,
    StorageWrite,
    TokenUsage,
    ToolCallRequest,
    ToolResult,
)
from kernos.workflows.agent_run import AgentRun
from kernos.workflows.agent_worker import sandbox_runner

MODEL = "fake-model"
USAGE = TokenUsage(input_tokens=3, output_tokens=5)


class FakeKernel:
    """Kernel activities that answer as the test says, and note what they were asked."""

    def __init__(
        self,
        *,
        refuse_first: errors.KernosError | None = None,
        replies: list[LLMResponse] | None = None,
        tool: Callable[[ToolCallRequest], str] | None = None,
        refuse_asks: str | None = None,
        before_refusing: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        #: Raised, as the kernel's activity edge raises it, by the first `llm.chat` only.
        self.refuse_first = refuse_first
        #: Awaited, with the run's id, by that `llm.chat` before it raises `refuse_first`.
        self.before_refusing = before_refusing
        #: What `llm.chat` answers, in turn; without them, `reply <n>` for the n-th call.
        self.replies = list(replies) if replies is not None else None
        #: What `tool.call` answers (the tool's output); without it, the arguments back.
        self.tool = tool
        self.tool_calls: list[ToolCallRequest] = []
        #: Raised by every `storage.write`.
        self.write_error: errors.KernosError = errors.InvalidPath("no file here")
        self.chats: list[LLMRequest] = []
        #: The reason every `approval.ask` is denied with; None: each is approved.
        self.refuse_asks = refuse_asks
        self.asks: list[ApprovalAsk] = []
        self.priorities: list[int | None] = []

    @activity.defn(name=LLM_CHAT.name)
    async def chat(self, request: LLMRequest) -> LLMResponse:
        """`llm.chat`: `reply <n>` for the n-th call."""
        self.chats.append(request)
        self.priorities.append(activity.info().priority.priority_key)
        if self.refuse_first is not None and len(self.chats) == 1:
            run_id = activity.info().workflow_id
            if self.before_refusing is not None and run_id is not None:
                await self.before_refusing(run_id)
            raise to_application_error(self.refuse_first)
        if self.replies is not None:
            return self.replies.pop(0).model_copy(update={"model": request.model})
        return LLMResponse(text=f"reply {len(self.chats)}", model=request.model, usage=USAGE)

    @activity.defn(name=TOOL_CALL.name)
    async def call_tool(self, request: ToolCallRequest) -> ToolResult:
        """`tool.call`: what `tool` makes of the request."""
        self.tool_calls.append(request)
        output = self.tool(request) if self.tool is not None else request.arguments
        return ToolResult(call_id=request.call_id, name=request.name, ok=True, content=output)

    @activity.defn(name=APPROVAL_ASK.name)
    async def ask(self, request: ApprovalAsk) -> ApprovalGiven:
        """`approval.ask`: decided at once, approved unless `refuse_asks` says why not."""
        self.asks.append(request)
        if self.refuse_asks is not None:
            raise to_application_error(errors.AccessDenied(self.refuse_asks))
        return ApprovalGiven(tool=request.tool, call_id=request.call_id)

    @activity.defn(name=STORAGE_WRITE.name)
    async def write(self, request: StorageWrite) -> FileVersion:
        """`storage.write`: always refused with `write_error`."""
        raise to_application_error(self.write_error)


@asynccontextmanager
async def started(
    client: Client, kernel: FakeKernel, agent: str, task: str, *, model: str = MODEL, **run: Any
) -> AsyncIterator[tuple[WorkflowHandle[Any, RunResult], RunInput]]:
    """A run of `agent` on `task`, admitted as the kernel would, with workers for its queues.

    The run's model is `model`; the kernel serves it and `MODEL`.
    """
    unique = uuid.uuid4().hex[:8]
    input = RunInput(
        run_id=f"fast-{agent}-{unique}",
        spec=RunSpec(agent=agent, task=task, model=model, priority=2),
        kernel_task_queue=f"kernel-{unique}",
        llm_queue_prefix=f"llm-{unique}.",
        tool_queue_prefix=f"tools-{unique}.",
        reports_end=False,
        **run,
    )
    agents_queue = f"agents-{unique}"
    async with AsyncExitStack() as workers:
        for worker in (
            Worker(client, task_queue=agents_queue, workflows=[AgentRun],
                   workflow_runner=sandbox_runner()),
            *(
                Worker(client, task_queue=scheduler.llm_task_queue(input.llm_queue_prefix, served),
                       activities=[kernel.chat])
                for served in sorted({MODEL, model})
            ),
            Worker(client, task_queue=input.kernel_task_queue,
                   activities=[kernel.write, kernel.ask]),
            *(
                Worker(client, task_queue=f"{input.tool_queue_prefix}{name}",
                       activities=[kernel.call_tool])
                for name in input.tools
            ),
        ):  # fmt: skip
            await workers.enter_async_context(worker)
        handle = await client.start_workflow(
            AGENT_RUN, input, id=input.run_id, task_queue=agents_queue, result_type=RunResult
        )
        yield handle, input


async def status_of(handle: WorkflowHandle[Any, Any]) -> str | None:
    """The run's status as operators see it in the Temporal UI's list."""
    described = await handle.describe()
    return described.typed_search_attributes.get(visibility.STATUS)
