"""A run's workflow and the SDK on the dev server alone, the kernel's activities replaced by fakes.

The fast tier's workflow tests: no PostgreSQL and no model server, only the Temporal dev server
(it starts in a fraction of a second) and, in this process, an agent worker running `AgentRun`
in the workflow sandbox as a real one does, and fakes registered under the syscall table's names
on the queues the run's input names. What a run does with what the kernel answers is tested
here; what the kernel decides is tested against the real servers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from kernos.activities.failures import to_application_error
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel import errors, scheduler, visibility
from kernos.kernel.syscall_table import AGENT_RUN, LLM_CHAT, STORAGE_WRITE
from kernos.kernel.syscalls import (
    ApprovalNotice,
    FileVersion,
    LLMRequest,
    LLMResponse,
    RunInput,
    RunResult,
    RunSpec,
    StorageWrite,
    SyscallLimits,
    TokenUsage,
)
from kernos.workflows import agent_registry
from kernos.workflows.agent_run import AgentRun
from kernos.workflows.agent_worker import sandbox_runner
from tests.agents import AGENTS
from tests.waiting import eventually

MODEL = "fake-model"
USAGE = TokenUsage(input_tokens=3, output_tokens=5)


class FakeKernel:
    """Kernel activities that answer as the test says, and note what they were asked."""

    def __init__(self, *, refuse_first: errors.KernosError | None = None) -> None:
        #: Raised, as the kernel's activity edge raises it, by the first `llm.chat` only.
        self.refuse_first = refuse_first
        #: Raised by every `storage.write`.
        self.write_error: errors.KernosError = errors.InvalidPath("no file here")
        self.chats: list[LLMRequest] = []
        self.priorities: list[int | None] = []

    @activity.defn(name=LLM_CHAT.name)
    async def chat(self, request: LLMRequest) -> LLMResponse:
        """`llm.chat`: `reply <n>` for the n-th call."""
        self.chats.append(request)
        self.priorities.append(activity.info().priority.priority_key)
        if self.refuse_first is not None and len(self.chats) == 1:
            raise to_application_error(self.refuse_first)
        return LLMResponse(text=f"reply {len(self.chats)}", model=request.model, usage=USAGE)

    @activity.defn(name=STORAGE_WRITE.name)
    async def write(self, request: StorageWrite) -> FileVersion:
        """`storage.write`: always refused with `write_error`."""
        raise to_application_error(self.write_error)


@pytest.fixture(scope="module")
async def client(temporal: TemporalDevServer) -> Client:
    agent_registry.register(AGENTS)
    return await Client.connect(temporal.address, data_converter=pydantic_data_converter)


@asynccontextmanager
async def started(
    client: Client, kernel: FakeKernel, agent: str, task: str, **run: Any
) -> AsyncIterator[tuple[WorkflowHandle[Any, RunResult], RunInput]]:
    """A run of `agent` on `task`, admitted as the kernel would, with workers for its queues."""
    unique = uuid.uuid4().hex[:8]
    input = RunInput(
        run_id=f"fast-{agent}-{unique}",
        spec=RunSpec(agent=agent, task=task, model=MODEL, priority=2),
        kernel_task_queue=f"kernel-{unique}",
        llm_queue_prefix=f"llm-{unique}.",
        reports_end=False,
        **run,
    )
    agents_queue = f"agents-{unique}"
    async with AsyncExitStack() as workers:
        for worker in (
            Worker(client, task_queue=agents_queue, workflows=[AgentRun],
                   workflow_runner=sandbox_runner()),
            Worker(client, task_queue=scheduler.llm_task_queue(input.llm_queue_prefix, MODEL),
                   activities=[kernel.chat]),
            Worker(client, task_queue=input.kernel_task_queue, activities=[kernel.write]),
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


async def test_a_run_sums_its_calls_each_at_the_priority_of_its_admission(client: Client) -> None:
    kernel = FakeKernel()
    async with started(client, kernel, "steps", "3") as (handle, input):
        result = await handle.result()
    assert result.output == "reply 1 | reply 2 | reply 3"
    assert (result.syscalls, result.usage) == (3, USAGE + USAGE + USAGE)
    assert [request.messages[-1].content for request in kernel.chats] == [
        "step 0",
        "step 1",
        "step 2",
    ]
    assert {request.model for request in kernel.chats} == {MODEL}
    admitted = scheduler.priority_of(input.spec, input.scheduling).priority_key
    assert kernel.priorities == [admitted] * 3
    assert await status_of(handle) == "completed"


@pytest.mark.parametrize(
    "error",
    [
        errors.PayloadTooLarge("the file 'a.md'", 60_000, 50_000, "[storage] max_file_bytes"),
        errors.UnknownTool("grep", ["search", "fetch"]),
        errors.InvalidPath("'../x' leaves the namespace"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_a_kernel_error_reaches_agent_code_with_its_type_message_and_fields(
    client: Client, error: errors.KernosError
) -> None:
    kernel = FakeKernel()
    kernel.write_error = error
    async with started(client, kernel, "catcher", "notes/a.md") as (handle, _):
        caught = json.loads((await handle.result()).output)
    assert caught == {
        "type": type(error).__name__,
        "message": str(error),
        "fields": json.loads(json.dumps(error.field_values())),
    }


async def test_a_syscall_awaiting_approval_waits_for_a_decision_then_asks_the_kernel_again(
    client: Client,
) -> None:
    kernel = FakeKernel(refuse_first=errors.ApprovalRequired("llm:fake-model awaits alice"))
    async with started(client, kernel, "echo", "hello") as (handle, _):
        await eventually(lambda: status_of(handle), lambda s: s == "awaiting-approval",
                         what="the run awaiting approval")  # fmt: skip
        # It waits for a decision: it has not asked again.
        assert len(kernel.chats) == 1
        await handle.execute_update("approval", ApprovalNotice(approval_id="a", status="approved"))
        result = await handle.result()
    assert result.output == "reply 2"
    assert len(kernel.chats) == 2
    assert await status_of(handle) == "completed"


async def test_a_step_agent_continues_as_new_and_carries_its_count(client: Client) -> None:
    kernel = FakeKernel()
    # Each step takes about 6 events: a run of 8 steps continues as new at least twice.
    limits = SyscallLimits(continue_as_new_events=20)
    async with started(client, kernel, "counter", "8", limits=limits) as (handle, _):
        result = await handle.result()
        last = (await client.get_workflow_handle(handle.id).describe()).run_id
    assert result.output == " | ".join(f"reply {n}" for n in range(1, 9))
    assert (result.syscalls, result.usage.output_tokens) == (8, 8 * USAGE.output_tokens)
    assert last != handle.first_execution_run_id

    async def executions() -> int:
        return len([run async for run in client.list_workflows(f"WorkflowId = '{handle.id}'")])

    await eventually(executions, lambda count: count >= 3, what="three executions of the run")


async def test_an_agents_bug_fails_the_run_named_by_its_type(client: Client) -> None:
    kernel = FakeKernel()
    async with started(client, kernel, "buggy", "hello") as (handle, _):
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("ZeroDivisionError", "the agent divided by zero")
    assert await status_of(handle) == "failed"
