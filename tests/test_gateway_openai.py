"""The gateway's OpenAI-compatible endpoint, used by the official `openai` package and by a
framework app that only changed its `base_url`: each request a run of the key's user."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

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
from tests.conftest import KeepHistory, workers
from tests.test_approvals import audited
from tests.test_gateway import gateway, run_count, with_policy
from tests.test_tools import calls

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
            stop=["\n\n"],
        )  # fmt: skip
        answer = raw.parse()
        assert answer.choices[0].message.content == "Paris."
        assert answer.choices[0].finish_reason == "stop"
        assert answer.usage is not None and answer.usage.completion_tokens == 1
        # A run of the key's user, in the key's tenant, audited: the body named none of it.
        view = await operator.show(raw.headers["x-kernos-run"])
        assert (view.record.agent, view.record.tenant, view.record.user, view.status) == (
            CHAT_AGENT, tenant, "bob", "completed",
        )  # fmt: skip
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
        huge: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "x" * (settings.max_task_bytes * 3)}
        ]
        with pytest.raises(openai.APIStatusError) as too_large:
            await client.chat.completions.create(model="scripted", messages=huge)
        assert too_large.value.status_code == 413
        assert await run_count(operator) == before  # none of these was admitted

        # Refused by policy: a run, audited, that ends denied.
        with pytest.raises(openai.PermissionDeniedError, match="llm:secret"):
            await client.chat.completions.create(model="secret", messages=question)

        # Past the tenant's token budget: 429, with when to ask again.
        await operator.set_budget(tenant, 1)
        await client.chat.completions.create(model="scripted", messages=question)  # spends it
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="scripted", messages=question)
        assert limited.value.response.headers["retry-after"].isdigit()
