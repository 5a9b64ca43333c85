"""The gateway's OpenAI-compatible endpoint, used by the official `openai` package and by a
framework app that only changed its `base_url`: each request a run of the key's user."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel

from kernos import KernosClient
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import CHAT_AGENT
from kernos.kernel.llm.scripted import ScriptedBackend
from kernos.testing.fake_openai import FakeOpenAIServer
from tests.conftest import KeepHistory, workers
from tests.test_approvals import audited
from tests.test_gateway import gateway, kernel_and_gateway, run_count, with_policy
from tests.test_tools import calls
from tests.waiting import eventually

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class City(BaseModel):
    """A structured answer."""

    name: str
    country: str


async def test_the_openai_client_uses_kernos_as_it_uses_openai(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    keep_history: KeepHistory,
) -> None:  # fmt: skip
    tenant = f"oa-{uuid.uuid4().hex[:8]}"
    settings, _ = with_policy(temporal, postgres, tmp_path)
    backend = ScriptedBackend([
        "Paris.",  # async
        "Paris, streamed.",  # streamed
        calls(("get_weather", {"city": "Paris"})),  # the caller's tool
        '{"name": "Paris", "country": "France"}',  # structured output
        "Paris, in sync.",  # the sync client
        "Paris, by LangChain.",  # a framework app, base_url changed
    ])  # fmt: skip
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Capital of France?"}]
    async with (
        workers(settings, backends={"scripted": backend}),
        gateway(settings) as url,
        await KernosClient.connect(settings) as operator,
    ):
        _, key = await operator.create_key(user="bob", tenant=tenant)
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

        raw = await client.chat.completions.with_raw_response.create(
            model="scripted", messages=question, max_tokens=16, temperature=0.0, seed=7,
            stop=["\n\n"], user="mallory", metadata={"tenant": "other"},
            extra_headers={"X-Kernos-Session": "chat-7"},
        )  # fmt: skip
        answer = raw.parse()
        assert answer.choices[0].message.content == "Paris."
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None and answer.usage.completion_tokens == 1
        # A run of the key's user, in the key's tenant, audited: what the body says is ignored.
        view = await operator.show(raw.headers["x-kernos-run"])
        assert (view.record.agent, view.record.tenant, view.record.user, view.status) == (
            CHAT_AGENT, tenant, "bob", "completed",
        )  # fmt: skip
        assert view.record.spec.session == "chat-7"  # the header names the run's session
        rows = await audited(operator, view.record.run_id)
        await keep_history(operator.temporal, view.record.run_id, "chat-completions-run")
        assert [(syscall, decision) for syscall, decision, _, _ in rows] == [
            ("run.submit", "allow"), ("llm.chat", "allow"), ("run.end", "allow"),
        ]  # fmt: skip
        sampling = backend.requests[0].sampling
        assert (sampling.max_tokens, sampling.temperature, sampling.seed, sampling.stop) == (
            16, 0.0, 7, ["\n\n"],
        )  # fmt: skip

        stream = await client.chat.completions.create(
            model="scripted", messages=question, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        texts, usage = [], None
        async for chunk in stream:
            texts += [choice.delta.content or "" for choice in chunk.choices]
            usage = chunk.usage or usage
        assert "".join(texts) == "Paris, streamed." and usage is not None
        assert usage.completion_tokens == 2

        called = await client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER], tool_choice="required",
        )  # fmt: skip
        [call] = called.choices[0].message.tool_calls or []
        assert call.type == "function"
        assert (call.function.name, json.loads(call.function.arguments)) == (
            "get_weather", {"city": "Paris"},
        )  # fmt: skip
        assert called.choices[0].finish_reason == "tool_calls"

        parsed = await client.chat.completions.parse(
            model="scripted", messages=question, response_format=City
        )
        assert parsed.choices[0].message.parsed == City(name="Paris", country="France")
        decoded_to = backend.requests[3].response_format
        assert decoded_to is not None and decoded_to.json_schema["required"] == ["name", "country"]

        sync = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        answered = await asyncio.to_thread(
            lambda: sync.chat.completions.create(model="scripted", messages=question)
        )
        assert answered.choices[0].message.content == "Paris, in sync."

        # An app written for OpenAI, pointed at the gateway by its base URL and a key alone.
        app_model = ChatOpenAI(model="scripted", base_url=f"{url}/v1", api_key=key)
        assert (await app_model.ainvoke("Capital of France?")).text == "Paris, by LangChain."

        assert [model.id async for model in client.models.list()] == ["scripted"]


async def test_errors_come_back_as_openais_and_nothing_is_admitted_for_a_bad_request(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"oa-{uuid.uuid4().hex[:8]}"
    settings, _ = with_policy(
        temporal, postgres, tmp_path, f"p, *, *, {tenant}, llm:secret, llm.*, deny\n",
        llm=[{"name": "open", "kind": "scripted", "model": "scripted"},
             {"name": "closed", "kind": "scripted", "model": "secret"}],
    )  # fmt: skip
    question: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    async with (
        workers(settings),
        gateway(settings) as url,
        await KernosClient.connect(settings) as operator,
    ):
        _, key = await operator.create_key(user="bob", tenant=tenant)
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        # What the key may use: the denied model is not listed.
        assert [model.id async for model in client.models.list()] == ["scripted"]

        before = await run_count(operator)
        stranger = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="kn_bad", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model="scripted", messages=question)
        with pytest.raises(openai.NotFoundError, match="nope"):
            await client.chat.completions.create(model="nope", messages=question)
        with pytest.raises(openai.BadRequestError, match="chat-completions field 'n'"):
            await client.chat.completions.create(model="scripted", messages=question, n=2)
        with pytest.raises(openai.BadRequestError, match="header X-Kernos-Session must be"):
            await client.chat.completions.create(
                model="scripted", messages=question, extra_headers={"X-Kernos-Session": "a b"}
            )
        with pytest.raises(openai.BadRequestError, match="field 'logit_bias' is not supported"):
            await client.chat.completions.create(
                model="scripted", messages=question, logit_bias={"1": 5}
            )
        # The kernel's tools are not the caller's to offer (their calls would come back to it).
        kernels = {"type": "function", "function": {
            "name": "calculator", "parameters": {"type": "object", "x-kernos-tool": True},
        }}  # fmt: skip
        with pytest.raises(openai.BadRequestError, match=r"parameters\.x-kernos-tool"):
            await client.chat.completions.create(
                model="scripted",
                messages=question,
                tools=[kernels],  # type: ignore[list-item]
            )
        for size in (settings.max_task_bytes * 3, settings.max_task_bytes * 3 // 2):
            # Over the gateway's read limit, and under it but over the kernel's task limit.
            huge: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * size}]
            with pytest.raises(openai.APIStatusError) as too_large:
                await client.chat.completions.create(model="scripted", messages=huge)
            assert too_large.value.status_code == 413
        assert "the request is" in too_large.value.message
        assert await run_count(operator) == before  # none of these was admitted

        # Refused by policy: a run, audited, that ends denied; the client does not ask again.
        with pytest.raises(openai.PermissionDeniedError, match="llm:secret") as denied:
            await client.chat.completions.create(model="secret", messages=question)
        assert denied.value.response.headers["x-should-retry"] == "false"
        assert await run_count(operator) == before + 1
        rows = await audited(operator, denied.value.response.headers["x-kernos-run"])
        assert ("llm.chat", "deny") in [(syscall, decision) for syscall, decision, _, _ in rows]

        # Past the tenant's token budget: 429, OpenAI's quota error, not asked again.
        await operator.set_budget(tenant, 1)
        await client.chat.completions.create(model="scripted", messages=question)  # spends it
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="scripted", messages=question)
        assert limited.value.code == "insufficient_quota"
        assert limited.value.response.headers["x-should-retry"] == "false"


async def test_a_request_whose_client_leaves_or_waits_too_long_cancels_its_run(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"oa-{uuid.uuid4().hex[:8]}"
    # A model that takes about 10 s to answer; the gateway waits 3 s at most.
    async with FakeOpenAIServer(lambda body: "slow " * 200, token_delay_s=0.05) as server:
        settings, _ = with_policy(
            temporal, postgres, tmp_path, gateway={"chat_timeout_s": 3.0},
            llm=[{"name": "slow", "kind": "openai", "model": "slow", "base_url": server.base_url}],
        )  # fmt: skip
        async with (
            workers(settings),
            gateway(settings) as url,
            await KernosClient.connect(settings) as operator,
        ):
            _, key = await operator.create_key(user="bob", tenant=tenant)
            body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=url, headers=headers) as http:
                waited = await http.post("/v1/chat/completions", json=body, timeout=30)
                assert waited.status_code == 504, waited.text
                assert waited.headers["x-should-retry"] == "false"
                with pytest.raises(httpx.ReadTimeout):  # the client gives up first
                    await http.post("/v1/chat/completions", json=body, timeout=1)
            runs = await operator.list_runs(tenant=tenant)
            assert len(runs) == 2
            for run in runs:  # both cancelled, each audited naming why
                run_id = run.record.run_id
                await eventually(
                    functools.partial(status_of, operator, run_id),
                    until=lambda status: status == "cancelled", what="the run cancelled",
                    timeout_s=30,
                )  # fmt: skip
                assert await cancelled_because(operator, run.record.run_id) == [
                    "chat completion cancelled: "
                    + ("the wait passed chat_timeout_s" if run is runs[-1] else
                       "the client went away")
                ]  # fmt: skip


async def status_of(client: KernosClient, run_id: str) -> str:
    """The run's status as the kernel recorded it."""
    return (await client.show(run_id)).status


async def cancelled_because(client: KernosClient, run_id: str) -> list[str]:
    """Why the run's cancellations say it was cancelled (the audit's reasons)."""
    async with client.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT reason FROM audit WHERE run_id = %s AND syscall = 'run.cancel' ORDER BY id",
            (run_id,),
        )
        return [row["reason"] for row in await cursor.fetchall()]


async def test_a_streamed_answer_comes_as_the_model_writes_it_and_a_reader_that_leaves_stops_it(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"oa-{uuid.uuid4().hex[:8]}"
    words = " ".join(f"w{n}" for n in range(30))

    def reply(body: dict[str, object]) -> str:
        # About 1.2 s of words; a "long" question, about 10 s.
        return "long " * 200 if "long" in json.dumps(body["messages"]) else words

    async with FakeOpenAIServer(reply, token_delay_s=0.04) as server:
        settings, _ = with_policy(
            temporal, postgres, tmp_path, events={"token_interval_s": 0.1},
            # The generation learns of a cancellation at its next heartbeat, a second apart.
            limits={"llm_heartbeat_s": 3.0},
            llm=[{"name": "fake", "kind": "openai", "model": "fake", "base_url": server.base_url}],
        )  # fmt: skip
        async with kernel_and_gateway(settings) as (url, operator):
            _, key = await operator.create_key(user="bob", tenant=tenant)
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
            stream = await client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": "count"}], stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            pieces, finish, usage = [], None, None
            answered_when_first_seen: int | None = None
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        if answered_when_first_seen is None:
                            answered_when_first_seen = len(server.completed())
                        pieces.append(choice.delta.content)
                    finish = choice.finish_reason or finish
                usage = chunk.usage or usage
            # The text came in pieces, the first while the model was still writing.
            assert "".join(pieces) == words and len(pieces) >= 3, pieces
            assert answered_when_first_seen == 0
            assert finish == "stop" and usage is not None and usage.completion_tokens == 30

            leaving = await client.chat.completions.with_raw_response.create(
                model="fake", messages=[{"role": "user", "content": "long"}], stream=True,
            )  # fmt: skip
            run_id = leaving.headers["x-kernos-run"]
            chunks = leaving.parse()
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    break  # the reader has what it wanted: it closes the stream
            await chunks.close()
            await eventually(
                functools.partial(status_of, operator, run_id),
                until=lambda status: status == "cancelled", what="the run cancelled",
                timeout_s=30,
            )  # fmt: skip
            assert await cancelled_because(operator, run_id) == [
                "chat completion cancelled: the client went away"
            ]
