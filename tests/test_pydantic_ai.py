"""Agents written with Pydantic AI, run as kernos runs (`kernos.adapters.pydantic_ai`).

The fast tier runs them on the dev server against a kernel of fakes (what the adapter sends and
makes of the answers); the servers tier runs them through the real kernel, audited.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from kernos import KernosClient, RunSpec
from kernos.activities.interceptor import ASKED_BY_AGENT
from kernos.infra.llama import MODEL_ALIAS, LlamaServer
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.errors import AccessDenied, ConfigError
from kernos.kernel.llm.scripted import ScriptedBackend
from kernos.kernel.syscalls import LLMResponse, ToolCall
from kernos.workflows import agent_registry
from tests.agents import TYPED_AGENTS
from tests.conftest import KeepHistory, workers
from tests.crash_runs import killed_while_answering
from tests.fake_kernel import MODEL, USAGE, FakeKernel, started
from tests.test_approvals import audited, pending_of, until
from tests.test_approvals import status_of as approval_status
from tests.test_mcp import SERVER as MCP_SERVER
from tests.test_tools import answer, calls, ledger, tool_settings


@pytest.fixture(scope="module")
async def client(temporal: TemporalDevServer) -> Client:
    # Declared, not imported here: each run imports its agent inside the sandbox, as in a pool.
    agent_registry.declare(TYPED_AGENTS)
    return await Client.connect(temporal.address, data_converter=pydantic_data_converter)


def reply(text: str = "", *calls: ToolCall) -> LLMResponse:
    """The fake kernel's answer to one `llm.chat`."""
    return LLMResponse(text=text, model=MODEL, usage=USAGE, tool_calls=list(calls))


async def failure(client: Client, kernel: FakeKernel, agent: str, task: str) -> ApplicationError:
    """The error a run of `agent` on `task` ended with."""
    async with started(client, kernel, agent, task) as (handle, _):
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def test_a_plain_agent_answers_by_one_llm_chat_with_its_instructions(
    client: Client,
) -> None:
    kernel = FakeKernel(replies=[reply("Paris.")])
    task = "Capital of France?"
    async with started(client, kernel, "typed-plain", task, model="run-model") as (handle, _):
        result = await handle.result()
    assert (result.output, result.syscalls) == ("Paris.", 1)
    [request] = kernel.chats
    # The model the agent names ("openai:fake-model"), not the run's; its instructions, the task.
    assert request.model == MODEL
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Answer briefly."), ("user", "Capital of France?"),
    ]  # fmt: skip


async def test_a_typed_agent_calls_its_tools_and_a_human_approves_the_one_that_asks(
    client: Client, keep_history: KeepHistory
) -> None:
    shout = ToolCall(id="call-1", name="shout", arguments='{"text": "go"}')
    launch = ToolCall(id="call-2", name="launch", arguments='{"target": "the moon"}')
    answer = ToolCall(id="call-3", name="final_result",
                      arguments='{"target": "the moon", "launched": true}')  # fmt: skip
    kernel = FakeKernel(replies=[reply("", shout, launch), reply("", answer)])
    task = "Launch at the moon."
    async with started(client, kernel, "typed-launching", task) as (handle, _):
        result = await handle.result()
        await keep_history(client, handle.id, "pydantic-ai-approval")
    assert json.loads(result.output) == {"target": "the moon", "launched": True}
    assert result.syscalls == 3  # two model calls, one ask
    [asked] = kernel.asks
    assert (asked.tool, asked.call_id) == ("launch", "call-2")
    assert json.loads(asked.arguments) == {"target": "the moon"}
    first, second = kernel.chats
    # The typed answer is a tool the model must call, beside the agent's own.
    assert {spec.name for spec in first.agent_tools} == {"launch", "shout", "final_result"}
    assert first.tool_choice == "required"
    answered = {m.tool_call_id: m.content for m in second.messages if m.role == "tool"}
    assert answered == {"call-1": "GO", "call-2": "launched at the moon"}


async def test_a_denied_approval_reaches_the_model_and_the_tool_does_not_run(
    client: Client,
) -> None:
    launch = ToolCall(id="call-2", name="launch", arguments='{"target": "the moon"}')
    answer = ToolCall(id="call-3", name="final_result",
                      arguments='{"target": "the moon", "launched": false}')  # fmt: skip
    kernel = FakeKernel(
        replies=[reply("", launch), reply("", answer)],
        refuse_asks="approval.ask on agent-tool:launch denied: not today",
    )
    async with started(client, kernel, "typed-launching", "Launch.") as (handle, _):
        result = await handle.result()
    assert json.loads(result.output)["launched"] is False
    second = kernel.chats[1]
    [told] = [m.content for m in second.messages if m.role == "tool"]
    assert told == "not approved: approval.ask on agent-tool:launch denied: not today"


async def test_calls_asked_at_once_and_one_a_tool_defers_to_the_app_is_refused_by_name(
    client: Client,
) -> None:
    first = ToolCall(id="call-1", name="delete", arguments='{"path": "a.txt"}')
    second = ToolCall(id="call-2", name="delete", arguments='{"path": "b.txt"}')
    kernel = FakeKernel(replies=[reply("", first, second), reply("Deleted both.")])
    async with started(client, kernel, "typed-asking", "Delete a.txt and b.txt.") as (handle, _):
        result = await handle.result()
    assert result.output == "Deleted both."
    # The tool asked for approval itself (ApprovalRequired): both calls asked at once (so the
    # kernel's activities take them in no set order).
    asked = sorted((a.tool, a.call_id) for a in kernel.asks)
    assert asked == [("delete", "call-1"), ("delete", "call-2")]
    answered = {m.tool_call_id: m.content for m in kernel.chats[1].messages if m.role == "tool"}
    assert answered == {"call-1": "deleted a.txt", "call-2": "deleted b.txt"}

    mail = ToolCall(id="call-3", name="mail", arguments='{"to": "bob"}')
    kernel = FakeKernel(replies=[reply("", mail), reply("never")])
    cause = await failure(client, kernel, "typed-asking", "Mail bob.")
    assert cause.type == "InvalidRequest", cause
    assert "tool 'mail' deferred its call to be run outside the agent" in str(cause)


async def test_a_model_denied_by_policy_ends_the_run_as_access_denied_asked_once(
    client: Client,
) -> None:
    kernel = FakeKernel(refuse_first=AccessDenied("llm.chat on llm:fake-model denied"))
    cause = await failure(client, kernel, "typed-plain", "hello")
    assert cause.type == "AccessDenied" and "llm:fake-model" in str(cause), cause
    assert len(kernel.chats) == 1


async def test_a_tool_that_reads_a_file_fails_the_run_naming_it(client: Client) -> None:
    peek = ToolCall(id="call-1", name="peek", arguments="{}")
    kernel = FakeKernel(replies=[reply("", peek), reply("never")])
    cause = await failure(client, kernel, "typed-peeking", "Where am I?")
    assert cause.type == "InvalidRequest", cause
    assert "tool 'peek' reached outside the run" in str(cause)
    assert "kernos.adapters.pydantic_ai.tools('peek')" in str(cause)


async def test_the_kernels_tool_is_a_tool_call_syscall(client: Client) -> None:
    call = ToolCall(id="call-7", name="calculator", arguments='{"expression": "12 * 34"}')
    kernel = FakeKernel(
        replies=[reply("", call), reply("408")],
        tool=lambda request: str(eval(json.loads(request.arguments)["expression"])),
    )
    async with started(client, kernel, "typed-calculating", "What is 12 * 34?",
                       tools=["calculator"]) as (handle, _):  # fmt: skip
        result = await handle.result()
    assert (result.output, result.syscalls) == ("408", 3)
    [made] = kernel.tool_calls
    assert (made.name, made.call_id, json.loads(made.arguments)) == (
        "calculator", "call-7", {"expression": "12 * 34"},
    )  # fmt: skip
    first, second = kernel.chats
    assert first.tools == ["calculator"] and first.agent_tools == []
    assert ("tool", "call-7", "408") in [
        (m.role, m.tool_call_id, m.content) for m in second.messages
    ]


async def test_a_kernos_agent_streams_a_pydantic_ai_agent(client: Client) -> None:
    kernel = FakeKernel(replies=[reply("Paris.")])
    async with started(client, kernel, "typed-streaming", "Capital?") as (handle, _):
        result = await handle.result()
    seen = json.loads(result.output)
    assert "".join(seen["texts"]) == "Paris."
    assert seen["output_tokens"] == USAGE.output_tokens


async def test_a_kernos_agent_running_a_pydantic_ai_agent_itself_is_governed_the_same(
    client: Client,
) -> None:
    shout = ToolCall(id="call-1", name="shout", arguments='{"text": "go"}')
    launch = ToolCall(id="call-2", name="launch", arguments='{"target": "Mars"}')
    answer = ToolCall(id="call-3", name="final_result",
                      arguments='{"target": "Mars", "launched": false}')  # fmt: skip
    kernel = FakeKernel(
        replies=[reply("", shout, launch), reply("", answer)],
        refuse_asks="approval.ask on agent-tool:launch denied: no",
    )
    async with started(client, kernel, "typed-driving", "Launch at Mars.") as (handle, _):
        result = await handle.result()
    assert json.loads(result.output) == {"target": "Mars", "launched": False}
    [asked] = kernel.asks
    assert (asked.tool, asked.call_id) == ("launch", "call-2")
    answered = {m.tool_call_id: m.content for m in kernel.chats[1].messages if m.role == "tool"}
    # The synchronous tool ran in the run; the denied one did not run.
    assert answered == {"call-1": "GO", "call-2": "not approved: approval.ask on "
                        "agent-tool:launch denied: no"}  # fmt: skip


async def test_dependencies_are_made_inside_the_run_from_the_task(client: Client) -> None:
    kernel = FakeKernel(replies=[reply("Hello, Ada!")])
    async with started(client, kernel, "typed-greeting", "ada") as (handle, _):
        result = await handle.result()
    assert result.output == "Hello, Ada!"
    [request] = kernel.chats
    assert request.messages[0].content == "Greet Ada by name."


async def test_kernos_model_outside_a_run_says_so_and_reaches_nothing() -> None:
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import ModelHTTPError

    from kernos.adapters.pydantic_ai import KernosModel

    with pytest.raises(ModelHTTPError) as refused:
        await Agent(KernosModel("fake-model")).run("hello")
    assert refused.value.status_code == 400
    assert "called outside a kernos run" in str(refused.value.body)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tests.typed_agents:misnamed", "tool name 'shout.loud' is not one a model can call"),
        ("tests.typed_agents:external", "its toolset ExternalToolset is not function tools"),
        ("tests.typed_agents:fetching", "its capability WebFetch would reach outside the run"),
        ("tests.typed_agents:falling_back", "its model is a FallbackModel"),
    ],
)
def test_what_kernos_cannot_run_is_refused_by_name_at_load(path: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        agent_registry.resolve(path)


def test_versions_other_than_the_supported_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kernos.adapters import pydantic_ai

    monkeypatch.setitem(pydantic_ai._INSTALLED, "pydantic-ai-slim", "3.0.0")
    with pytest.raises(ConfigError, match=r"pydantic-ai-slim 3\.0\.0 is installed; .* 2\.68"):
        agent_registry.resolve("tests.typed_agents:plain")


async def test_a_typed_agent_through_the_real_kernel_a_human_decides_audited(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    keep_history: KeepHistory,
) -> None:  # fmt: skip
    tenant = f"typed-{uuid.uuid4().hex[:8]}"
    # The agent names its model: a scripted instance serves that name.
    settings = tool_settings(
        temporal, postgres, tmp_path, agents=TYPED_AGENTS,
        llm=[{"name": "scripted", "kind": "scripted", "model": MODEL}],
        policy=f"p, alice, *, {tenant}, agent-tool:*, approval.decide, allow\n",
    )  # fmt: skip
    backend = ScriptedBackend([
        calls(("launch", {"target": "the moon"})),
        calls(("final_result", {"target": "the moon", "launched": True})),
    ])  # fmt: skip
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        task = "Launch at the moon."
        handle = await client.submit(RunSpec(agent="typed-launching", task=task, tenant=tenant))
        waiting = await pending_of(client, handle.run_id)
        assert (waiting.syscall, waiting.resource, waiting.rule) == (
            "approval.ask", "agent-tool:launch", ASKED_BY_AGENT,
        )  # fmt: skip
        assert json.loads(waiting.request["arguments"]) == {"target": "the moon"}
        await until(lambda: approval_status(client, handle.run_id), "awaiting-approval")
        with pytest.raises(AccessDenied, match="'mallory' may not decide approvals"):
            await client.approve(handle.run_id, user="mallory")
        await client.approve(handle.run_id, user="alice", reason="go")
        result = await handle.result()
        rows = await audited(client, handle.run_id)
        await keep_history(client.temporal, handle.run_id, "pydantic-ai-real-approval")
    assert json.loads(result.output) == {"target": "the moon", "launched": True}
    assert [(syscall, decision, basis) for syscall, decision, basis, _ in rows] == [
        ("llm.chat", "allow", "policy"),
        ("approval.ask", "deny", "approval"),  # waiting
        ("approval.decide", "deny", "policy"),  # mallory
        ("approval.decide", "allow", "policy"),  # alice
        ("approval.ask", "allow", "approval"),  # once: the agent resumed, not asked again
        ("llm.chat", "allow", "policy"),
        ("run.end", "allow", "policy"),
    ]


async def test_the_kernels_tool_through_the_real_kernel_is_audited_and_ledgered_once(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = tool_settings(temporal, postgres, tmp_path, agents=TYPED_AGENTS)
    backend = ScriptedBackend(
        [calls(("calculator", {"expression": "12 * 34"})), answer("12 * 34 is 408.")]
    )
    tenant = f"typed-{uuid.uuid4().hex[:8]}"
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(
            RunSpec(agent="typed-calculating", task="What is 12 * 34?", tenant=tenant)
        )
        result = await handle.result()
        view = await client.show(handle.run_id)
        rows = await ledger(client, tenant)
    assert result.output == "12 * 34 is 408."
    assert [
        (c.syscall, c.resource, c.decision) for c in view.syscalls if c.syscall != "run.end"
    ] == [
        ("llm.chat", "llm:scripted", "allow"),
        ("tool.call", "tool:calculator", "allow"),
        ("llm.chat", "llm:scripted", "allow"),
    ]
    assert [(r["tool"], r["status"], r["attempts"], r["result"]) for r in rows] == [
        ("calculator", "ok", 1, "408")
    ]


async def test_an_mcp_servers_tool_configured_in_kernos_is_a_tool_call_syscall(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = tool_settings(
        temporal, postgres, tmp_path, agents=TYPED_AGENTS, tools={"mcp": {"test": MCP_SERVER}}
    )
    backend = ScriptedBackend([calls(("test__add", {"a": 2, "b": 3})), answer("2 + 3 is 5.")])
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(RunSpec(agent="typed-adding", task="What is 2 + 3?"))
        result = await handle.result()
        view = await client.show(handle.run_id)
    assert result.output == "2 + 3 is 5."
    assert [(c.syscall, c.resource) for c in view.syscalls if c.syscall != "run.end"] == [
        ("llm.chat", "llm:scripted"),
        ("tool.call", "tool:test__add"),
        ("llm.chat", "llm:scripted"),
    ]


async def test_workers_killed_mid_generation_the_agent_goes_on_and_no_tool_runs_twice(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    crashed = await killed_while_answering(
        temporal, postgres, tmp_path, TYPED_AGENTS, "typed-calculating"
    )
    assert crashed.result.output.startswith("408 it is")
    assert crashed.result.syscalls == 3  # the call, the tool, the answer: none made twice
    assert [(r["tool"], r["status"], r["attempts"]) for r in crashed.ledger] == [
        ("calculator", "ok", 1)
    ]
    assert crashed.tool_turns.count(True) == 1
    assert crashed.answers_completed == [False, True]


async def test_the_example_completes_on_the_local_model_every_call_a_syscall(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    stack_llama: LlamaServer,
    tmp_path: Path,
) -> None:
    instance = {"name": "local", "kind": "llamacpp", "model": MODEL_ALIAS,
                "base_url": stack_llama.base_url, "slots": 4}  # fmt: skip
    settings = tool_settings(
        temporal, postgres, tmp_path, llm=[instance],
        agents={"typed-assistant": "kernos.examples.pydantic_ai_assistant:assistant"},
    )  # fmt: skip
    task = "What is 12 * 34? Then save the answer to notes/answer.md."
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="typed-assistant", task=task))
        result = await asyncio.wait_for(handle.result(), 300)
        view = await client.show(handle.run_id)
    made = [(c.syscall, c.resource, c.decision) for c in view.syscalls if c.syscall != "run.end"]
    # The first turn must call a tool (the example's settings): the small model computes or
    # saves; at most four model calls, the last one an answer.
    assert made[0] == ("llm.chat", f"llm:{MODEL_ALIAS}", "allow"), made
    assert {syscall for syscall, _, _ in made} == {"llm.chat", "tool.call"}, made
    assert made[-1][0] == "llm.chat" and result.output.strip(), made
    assert result.syscalls == len(made), made
