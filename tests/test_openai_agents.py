"""Agents written with the OpenAI Agents SDK, run as kernos runs (`kernos.adapters.openai_agents`).

The fast tier runs them on the dev server against a kernel of fakes (what the adapter sends and
makes of the answers); the servers tier runs one through the real kernel, audited.
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
from tests.agents import SDK_AGENTS
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
    agent_registry.declare(SDK_AGENTS)
    return await Client.connect(temporal.address, data_converter=pydantic_data_converter)


async def test_a_plain_agent_asks_the_runs_model_with_its_instructions(client: Client) -> None:
    kernel = FakeKernel()
    async with started(client, kernel, "plain", "Say hello.") as (handle, _):
        result = await handle.result()
    assert result.output == "reply 1"
    assert (result.syscalls, result.usage) == (1, USAGE)
    [request] = kernel.chats
    assert request.model == MODEL  # the agent names none: the run's model
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Answer in one word."),
        ("user", "Say hello."),
    ]
    assert request.tools == [] and request.response_format is None


async def test_the_kernels_tools_are_tool_call_syscalls_and_their_results_go_back(
    client: Client,
) -> None:
    call = ToolCall(id="call-7", name="calculator", arguments='{"expression": "12 * 34"}')
    kernel = FakeKernel(
        replies=[
            LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[call]),
            LLMResponse(text="408", model=MODEL, usage=USAGE),
        ],
        tool=lambda request: str(eval(json.loads(request.arguments)["expression"])),
    )
    task = "What is 12 * 34?"
    async with started(client, kernel, "calculating", task, tools=["calculator"]) as (handle, _):
        result = await handle.result()
    assert result.output == "408"
    assert result.syscalls == 3  # two model calls, one tool call
    [made] = kernel.tool_calls
    assert (made.name, made.arguments, made.call_id) == (call.name, call.arguments, "call-7")
    first, second = kernel.chats
    assert first.tools == ["calculator"] and first.tool_choice == "auto"
    assert [(m.role, m.tool_call_id, m.content) for m in second.messages[2:]] == [
        ("assistant", None, ""),
        ("tool", "call-7", "408"),
    ]
    assert second.messages[2].tool_calls == [call]


async def test_an_output_type_is_asked_for_as_a_json_schema_and_parsed(client: Client) -> None:
    city = {"name": "Paris", "country": "France"}
    kernel = FakeKernel(replies=[LLMResponse(text=json.dumps(city), model=MODEL, usage=USAGE)])
    async with started(client, kernel, "typed", "France") as (handle, _):
        result = await handle.result()
    assert json.loads(result.output) == city
    [request] = kernel.chats
    assert request.response_format is not None
    assert set(request.response_format.json_schema["properties"]) == {"name", "country"}
    assert (request.sampling.temperature, request.sampling.max_tokens) == (0.0, 64)


def test_an_sdk_of_another_version_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from kernos.adapters import openai_agents

    monkeypatch.setattr(openai_agents, "agents_version", "0.30.1")
    with pytest.raises(ConfigError, match=r"openai-agents 0\.30\.1 is installed; .* 0\.22\.x"):
        agent_registry.resolve("tests.sdk_agents:plain")


async def test_a_model_the_policy_denies_ends_the_run_as_access_denied(client: Client) -> None:
    kernel = FakeKernel(refuse_first=AccessDenied("llm.chat on llm:fake-model denied by policy"))
    async with started(client, kernel, "plain", "hi") as (handle, _):
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == (
        "AccessDenied",
        "llm.chat on llm:fake-model denied by policy",
    )


async def test_the_agents_own_tools_are_offered_and_answered_inside_the_run(
    client: Client,
) -> None:
    call = ToolCall(id="call-1", name="shout", arguments='{"text": "hello"}')
    kernel = FakeKernel(
        replies=[
            LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[call]),
            LLMResponse(text="HELLO it is", model=MODEL, usage=USAGE),
        ]
    )
    async with started(client, kernel, "shouting", "hello") as (handle, _):
        result = await handle.result()
    assert result.output == "HELLO it is"
    assert kernel.tool_calls == []  # no syscall: the SDK answered it in the run
    first, second = kernel.chats
    assert first.tools == [] and [spec.name for spec in first.agent_tools] == ["shout"]
    assert first.agent_tools[0].parameters["properties"]["text"]["type"] == "string"
    assert ("tool", "call-1", "HELLO") in [
        (m.role, m.tool_call_id, m.content) for m in second.messages
    ]


async def test_a_function_tool_that_reaches_outside_the_run_fails_it_by_name(
    client: Client,
) -> None:
    call = ToolCall(id="call-1", name="peek", arguments="{}")
    kernel = FakeKernel(replies=[LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[call])])
    async with started(client, kernel, "peeking", "peek") as (handle, _):
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidRequest"
    assert "function tool 'peek' reached outside the run" in cause.message
    assert "@kernos.tool" in cause.message


async def test_a_handoff_is_the_models_call_and_the_next_agent_is_governed_too(
    client: Client, keep_history: KeepHistory
) -> None:
    handoff = ToolCall(id="call-1", name="transfer_to_plain", arguments="{}")
    kernel = FakeKernel(
        replies=[
            LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[handoff]),
            LLMResponse(text="Bonjour", model=MODEL, usage=USAGE),
        ]
    )
    async with started(client, kernel, "triage", "Greet me in French.") as (handle, _):
        result = await handle.result()
        await keep_history(client, handle.id, "openai-agents-handoff")
    assert (result.output, result.syscalls) == ("Bonjour", 2)
    first, second = kernel.chats
    assert [spec.name for spec in first.agent_tools] == ["transfer_to_plain"]
    assert first.messages[0].content == "Hand off to the right agent."
    assert second.messages[0].content == "Answer in one word."  # the agent handed off to


async def test_a_tool_that_needs_approval_runs_once_a_human_approves_it(client: Client) -> None:
    call = ToolCall(id="call-1", name="launch", arguments='{"target": "the moon"}')
    kernel = FakeKernel(
        replies=[
            LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[call]),
            LLMResponse(text="done", model=MODEL, usage=USAGE),
        ]
    )
    async with started(client, kernel, "launching", "Launch.") as (handle, _):
        result = await handle.result()
    assert (result.output, result.syscalls) == ("done", 3)  # two model calls, one approval
    [asked] = kernel.asks
    assert (asked.tool, asked.arguments, asked.call_id) == (
        "launch", '{"target": "the moon"}', "call-1",
    )  # fmt: skip
    assert ("tool", "call-1", "launched at the moon") in [
        (m.role, m.tool_call_id, m.content) for m in kernel.chats[1].messages
    ]


async def test_a_denied_tool_does_not_run_and_the_model_reads_why(client: Client) -> None:
    call = ToolCall(id="call-1", name="launch", arguments='{"target": "the moon"}')
    kernel = FakeKernel(
        replies=[
            LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[call]),
            LLMResponse(text="understood", model=MODEL, usage=USAGE),
        ],
        refuse_asks="approval.ask on agent-tool:launch denied by 'alice': not today",
    )
    async with started(client, kernel, "launching", "Launch.") as (handle, _):
        result = await handle.result()
    assert result.output == "understood"
    answered = {m.tool_call_id: m.content for m in kernel.chats[1].messages if m.role == "tool"}
    assert answered == {
        "call-1": "not approved: approval.ask on agent-tool:launch denied by 'alice': not today"
    }


async def test_a_kernos_agent_may_run_an_sdk_agent_streamed_its_calls_syscalls(
    client: Client, keep_history: KeepHistory
) -> None:
    call = ToolCall(id="call-1", name="shout", arguments='{"text": "hello"}')
    kernel = FakeKernel(
        replies=[
            LLMResponse(text="", model=MODEL, usage=USAGE, tool_calls=[call]),
            LLMResponse(text="HELLO to you", model=MODEL, usage=USAGE),
        ]
    )
    async with started(client, kernel, "streaming", "hello") as (handle, _):
        result = await handle.result()
        await keep_history(client, handle.id, "openai-agents-streamed")
    seen = json.loads(result.output)
    assert seen["final"] == "HELLO to you"
    assert seen["deltas"] == ["HELLO to you"]
    assert seen["items"] == ["tool_called", "tool_output", "message_output_created"]
    assert result.syscalls == 2 and len(kernel.chats) == 2  # each model call an llm.chat
    assert kernel.chats[0].messages[0].content == "Shout what the user says."


async def test_a_run_config_taking_model_calls_around_the_kernel_fails_the_run(
    client: Client,
) -> None:
    kernel = FakeKernel()
    async with started(client, kernel, "overriding", "hello") as (handle, _):
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "ConfigError"
    assert "run_config.model would replace every agent's model" in cause.message
    assert kernel.chats == []


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("tests.sdk_agents:whispering", "function tool 'whisper' is synchronous"),
        ("tests.sdk_agents:whispering", "make it `async def`"),
        ("tests.sdk_agents:searching", "tool 'web_search' is a hosted tool"),
        ("tests.sdk_agents:consulting", "tool 'ask_plain' is an agent run as a tool"),
        ("tests.sdk_agents:retrying", "model_settings.retry would retry model calls"),
        ("tests.sdk_agents:misnamed", "tool name 'shout.loud' is not one a model can call"),
        ("tests.sdk_agents:not_an_agent", "is neither a subclass of kernos.Agent nor an agent"),
    ],
)
def test_what_kernos_cannot_run_is_refused_by_name_at_load(path: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        agent_registry.resolve(path)


async def test_a_tool_using_agent_runs_through_the_real_kernel_every_call_audited(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    keep_history: KeepHistory,
) -> None:  # fmt: skip
    settings = tool_settings(temporal, postgres, tmp_path, agents=SDK_AGENTS)
    backend = ScriptedBackend(
        [calls(("calculator", {"expression": "12 * 34"})), answer("12 * 34 is 408.")]
    )
    tenant = f"sdk-{uuid.uuid4().hex[:8]}"
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(
            RunSpec(agent="calculating", task="What is 12 * 34?", tenant=tenant)
        )
        result = await handle.result()
        view = await client.show(handle.run_id)
        await keep_history(client.temporal, handle.run_id, "openai-agents-tool-call")
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
    # The model read the kernel's answer to its call (as text: this backend calls tools by
    # constrained JSON).
    seen = [m.content for m in backend.requests[1].messages]
    assert any(c.startswith("Result of tool call ") and c.endswith("\n408") for c in seen), seen


async def test_an_mcp_servers_tool_configured_in_kernos_is_a_tool_call_syscall(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = tool_settings(
        temporal, postgres, tmp_path, agents=SDK_AGENTS, tools={"mcp": {"test": MCP_SERVER}}
    )
    backend = ScriptedBackend([calls(("test__add", {"a": 2, "b": 3})), answer("2 + 3 is 5.")])
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(RunSpec(agent="adding", task="What is 2 + 3?"))
        result = await handle.result()
        view = await client.show(handle.run_id)
    assert result.output == "2 + 3 is 5."
    assert [(c.syscall, c.resource) for c in view.syscalls if c.syscall != "run.end"] == [
        ("llm.chat", "llm:scripted"),
        ("tool.call", "tool:test__add"),
        ("llm.chat", "llm:scripted"),
    ]
    # The kernel told the model the server's schema; the model read the server's answer.
    assert "- test__add(a: integer, b: integer)" in backend.requests[0].messages[0].content
    seen = [m.content for m in backend.requests[1].messages]
    assert any(c.endswith("\n5") for c in seen), seen


async def test_the_sdks_approval_is_a_kernos_approval_a_human_decides_audited(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    keep_history: KeepHistory,
) -> None:  # fmt: skip
    tenant = f"sdk-{uuid.uuid4().hex[:8]}"
    settings = tool_settings(
        temporal, postgres, tmp_path, agents=SDK_AGENTS,
        policy=f"p, alice, *, {tenant}, agent-tool:*, approval.decide, allow\n",
    )  # fmt: skip
    backend = ScriptedBackend([calls(("launch", {"target": "the moon"})), answer("Launched.")])
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(RunSpec(agent="launching", task="Launch.", tenant=tenant))
        waiting = await pending_of(client, handle.run_id)
        assert (waiting.syscall, waiting.resource, waiting.rule) == (
            "approval.ask", "agent-tool:launch", ASKED_BY_AGENT,
        )  # fmt: skip
        assert json.loads(waiting.request["arguments"]) == {"target": "the moon"}
        await until(lambda: approval_status(client, handle.run_id), "awaiting-approval")
        assert len(backend.requests) == 1  # the tool has not run: no answer for the model yet
        with pytest.raises(AccessDenied, match="'mallory' may not decide approvals"):
            await client.approve(handle.run_id, user="mallory")
        await client.approve(handle.run_id, user="alice", reason="go")
        result = await handle.result()
        rows = await audited(client, handle.run_id)
        await keep_history(client.temporal, handle.run_id, "openai-agents-approval")
    assert result.output == "Launched."
    assert [(syscall, decision, basis) for syscall, decision, basis, _ in rows] == [
        ("llm.chat", "allow", "policy"),
        ("approval.ask", "deny", "approval"),  # waiting
        ("approval.decide", "deny", "policy"),  # mallory
        ("approval.decide", "allow", "policy"),  # alice
        ("approval.ask", "allow", "approval"),
        ("llm.chat", "allow", "policy"),
        ("run.end", "allow", "policy"),
    ]
    seen = [m.content for m in backend.requests[1].messages]
    assert any(c.endswith("launched at the moon") for c in seen), seen


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
        agents={"assistant": "kernos.examples.openai_assistant:assistant"},
    )  # fmt: skip
    task = "What is 12 * 34? Then save the answer to notes/answer.md."
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="assistant", task=task))
        result = await asyncio.wait_for(handle.result(), 300)
        view = await client.show(handle.run_id)
    made = [(c.syscall, c.resource, c.decision) for c in view.syscalls if c.syscall != "run.end"]
    # The first turn must call a tool (the example's tool_choice): the small model computes
    # (the calls of one turn run at once, in no set order).
    assert made[0] == ("llm.chat", f"llm:{MODEL_ALIAS}", "allow"), made
    assert ("tool.call", "tool:calculator", "allow") in made, made
    assert {syscall for syscall, _, _ in made} == {"llm.chat", "tool.call"}
    assert result.syscalls == len(made)
    assert result.output.strip()


async def test_workers_killed_mid_generation_the_sdk_agent_goes_on_and_no_tool_runs_twice(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    crashed = await killed_while_answering(temporal, postgres, tmp_path, SDK_AGENTS, "calculating")
    assert crashed.result.output.startswith("408 it is")
    assert crashed.result.syscalls == 3  # the call, the tool, the answer: none made twice
    assert [(r["tool"], r["status"], r["attempts"]) for r in crashed.ledger] == [
        ("calculator", "ok", 1)
    ]
    # The first answer was never asked again; the one cut by the kernel worker's death was.
    assert crashed.tool_turns.count(True) == 1
    assert crashed.answers_completed == [False, True]
