"""Runs against a real OpenAI-compatible HTTP server (the recording one in tests/)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from kernos import KernosClient, RunFailed, RunSpec, Settings
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.testing.fake_openai import Failure, FakeOpenAIServer
from tests.conftest import make_settings, workers
from tests.waiting import eventually


def llm_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, base_url: str, **overrides: Any
) -> Settings:
    return make_settings(
        temporal,
        postgres,
        llm=[
            {"name": "fake", "kind": "openai", "model": "fake-model", "base_url": base_url},
            {"name": "vault", "kind": "openai", "model": "secret", "base_url": base_url},
        ],
        **overrides,
    )


@asynccontextmanager
async def kernos(settings: Settings) -> AsyncIterator[KernosClient]:
    client = await KernosClient.connect(settings)
    try:
        yield client
    finally:
        await client.close()


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    await eventually(condition, what="the condition", timeout_s=timeout_s)


async def test_example_agent_on_a_server(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    async with FakeOpenAIServer() as server:
        server.failures.append(Failure(500, "warming up"))
        settings = llm_settings(temporal, postgres, server.base_url)
        async with kernos(settings) as client, workers(settings):
            handle = await client.submit(
                RunSpec(agent="planner", task="name three colours", tenant="acme", user="al")
            )
            result = await handle.result()
            view = await client.show(handle.run_id)

    # The first attempt met a 500 and was retried by Temporal; both syscalls then completed.
    assert len(server.requests) == 3
    assert len(server.completed()) == 2
    assert result.output.startswith("reply to: Follow the plan")
    assert result.usage.output_tokens == sum(
        len(server.reply(r.body).split(" ")) for r in server.completed()
    )
    assert result.usage.input_tokens > 0
    assert [(c.attempt, c.decision, c.outcome, c.error_type) for c in view.syscalls] == [
        (1, "allow", "error", "LLMUnavailable"),
        (2, "allow", "ok", None),
        (1, "allow", "ok", None),
        (1, "allow", None, None),  # run.end
    ]
    assert view.record.output_tokens == result.usage.output_tokens
    sent = server.requests[0].body
    assert sent["model"] == "fake-model"
    assert sent["max_tokens"] == 128
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


async def test_denied_syscall_never_reaches_the_server(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text(
        "p, *, *, *, llm:*, llm.chat, allow\np, *, *, acme, llm:secret, llm.chat, deny\n"
    )
    async with FakeOpenAIServer() as server:
        settings = llm_settings(
            temporal, postgres, server.base_url, policy={"policy_path": str(policy)}
        )
        async with kernos(settings) as client, workers(settings):
            handle = await client.submit(RunSpec(agent="forbidden", task="tell", tenant="acme"))
            result = await handle.result()
            view = await client.show(handle.run_id)
    assert result.output.startswith("denied: llm.chat on llm:secret denied")
    assert "acme, llm:secret, llm.chat, deny" in result.output
    assert server.requests == []
    assert [(c.resource, c.decision, c.outcome) for c in view.syscalls] == [
        ("llm:secret", "deny", None),
        (f"run:{handle.run_id}", "allow", None),
    ]


async def test_bad_request_fails_the_run_once(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    async with FakeOpenAIServer() as server:
        server.failures.append(Failure(400, "the request exceeds the available context size"))
        settings = llm_settings(temporal, postgres, server.base_url)
        async with kernos(settings) as client, workers(settings):
            handle = await client.submit(RunSpec(agent="echo", task="too long"))
            with pytest.raises(RunFailed) as failed:
                await handle.result()
            record = await client.runs.get(handle.run_id)
    assert failed.value.error_type == "ContextTooLong"
    assert "exceeds the available context size" in str(failed.value)
    assert len(server.requests) == 1  # non-retryable: Temporal did not try again
    assert record.status == "failed"


async def test_rate_limit_waits_for_the_servers_delay(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    async with FakeOpenAIServer() as server:
        server.failures.append(Failure(429, "busy", {"Retry-After": "2"}))
        settings = llm_settings(temporal, postgres, server.base_url)
        async with kernos(settings) as client, workers(settings):
            started = time.monotonic()
            handle = await client.submit(RunSpec(agent="echo", task="hi"))
            await handle.result()
            elapsed = time.monotonic() - started
    assert len(server.requests) == 2
    # The retry policy's own interval here is 0.2 s: only the server's delay explains this wait.
    assert elapsed >= 2.0


async def test_run_waits_while_the_server_is_down(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    port = free_port()
    settings = llm_settings(temporal, postgres, f"http://127.0.0.1:{port}")
    async with kernos(settings) as client, workers(settings):
        handle = await client.submit(RunSpec(agent="echo", task="are you there"))

        async def waiting() -> bool:
            view = await client.show(handle.run_id)
            return view.status == "waiting"

        await wait_for(waiting)
        view = await client.show(handle.run_id)
        assert view.waiting_on is not None
        assert "llm.chat retrying" in view.waiting_on
        assert "cannot reach LLM server fake" in view.waiting_on
        async with FakeOpenAIServer(port=port) as server:
            result = await handle.result()
    assert result.output == "reply to: are you there"
    assert len(server.completed()) == 1


async def test_cancel_mid_syscall_closes_the_servers_request(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    async with FakeOpenAIServer(lambda _: "word " * 400, token_delay_s=0.05) as server:
        settings = llm_settings(temporal, postgres, server.base_url, limits={"llm_heartbeat_s": 1})
        async with kernos(settings) as client, workers(settings):
            handle = await client.submit(RunSpec(agent="echo", task="talk a lot"))

            async def streaming() -> bool:
                return len(server.requests) == 1

            await wait_for(streaming)
            await asyncio.sleep(0.3)
            await handle.cancel()
            with pytest.raises(RunFailed) as failed:
                await handle.result()
            description = await client.temporal.get_workflow_handle(handle.run_id).describe()

            async def recorded() -> bool:
                return (await client.runs.get(handle.run_id)).status == "cancelled"

            await wait_for(recorded)
    assert failed.value.error_type == "CancelledError"
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert server.requests[0].aborted
    assert not server.requests[0].completed
