"""A run's workflow and the SDK on the dev server alone, the kernel's activities replaced by fakes.

The fast tier's workflow tests: no PostgreSQL and no model server, only the Temporal dev server
(it starts in a fraction of a second) and, in this process, an agent worker running `AgentRun`
in the workflow sandbox as a real one does, and fakes registered under the syscall table's names
on the queues the run's input names. What a run does with what the kernel answers is tested
here; what the kernel decides is tested against the real servers.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel import errors, scheduler
from kernos.kernel.syscalls import ApprovalNotice, SyscallLimits
from kernos.workflows import agent_registry
from tests.agents import AGENTS
from tests.conftest import KeepHistory
from tests.fake_kernel import MODEL, USAGE, FakeKernel, started, status_of
from tests.waiting import eventually


@pytest.fixture(scope="module")
async def client(temporal: TemporalDevServer) -> Client:
    agent_registry.register(AGENTS)
    return await Client.connect(temporal.address, data_converter=pydantic_data_converter)


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


async def test_a_decision_that_comes_while_the_kernel_is_asked_wakes_the_run(
    client: Client, keep_history: KeepHistory
) -> None:
    # The human decides before the run has read the kernel's "awaiting approval": as when a
    # replacement agent worker replays the run with the decision already queued. The run must
    # ask again at once, not wait a whole approval timeout for a second decision.
    async def approve(run_id: str) -> None:
        notice = ApprovalNotice(approval_id="a", status="approved")
        await client.get_workflow_handle(run_id).execute_update("approval", notice)

    kernel = FakeKernel(
        refuse_first=errors.ApprovalRequired("llm:fake-model awaits alice"),
        before_refusing=approve,
    )
    async with started(client, kernel, "echo", "hello") as (handle, _):
        result = await asyncio.wait_for(handle.result(), 60)
        await keep_history(client, handle.id, "decided-while-asked")
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
