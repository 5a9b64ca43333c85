"""Round-robin: generations yield their slot at each time slice and resume where they stopped."""

from __future__ import annotations

import asyncio
from typing import Any

from kernos import KernosClient, RunSpec
from kernos.infra.llama import MODEL_ALIAS, LlamaServer
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import Settings
from kernos.testing.fake_openai import FakeOpenAIServer
from kernos.testing.fake_sglang import FakeSGLangServer
from tests.conftest import KeepHistory, make_settings, workers
from tests.waiting import eventually


def sglang_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, fake: FakeSGLangServer, **extra: Any
) -> Settings:
    return make_settings(
        temporal,
        postgres,
        llm=[
            {
                "name": "gpu0",
                "kind": "sglang",
                "model": fake.served_model_name,
                "base_url": fake.base_url,
                "slots": 1,
            }
        ],
        **extra,
    )


def expected_text(fake: FakeSGLangServer, prompt: str, max_tokens: int) -> str:
    ids = fake.tokenizer.chat([{"role": "user", "content": prompt}])
    return fake.tokenizer.decode(fake.uninterrupted(ids, max_tokens))


async def finishing_order(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, policy: str
) -> tuple[list[str], dict[str, str], FakeSGLangServer]:
    """A long generation starts on a one-slot server, a short one arrives behind it."""
    async with FakeSGLangServer(max_running_requests=1, step_s=0.01, eos=False) as fake:
        settings = sglang_settings(
            temporal, postgres, fake, scheduler={"policy": policy, "slice_tokens": 8}
        )
        async with workers(settings), await KernosClient.connect(settings) as client:
            long = await client.submit(RunSpec(agent="length", task="120 tell a long story"))
            await eventually(
                lambda: fake.requests, what="the long generation started", every_s=0.01
            )
            short = await client.submit(RunSpec(agent="length", task="8 say hi"))
            order: list[str] = []
            outputs: dict[str, str] = {}

            async def wait(name: str, handle: Any) -> None:
                outputs[name] = (await handle.result()).output
                order.append(name)

            await asyncio.gather(wait("long", long), wait("short", short))
            # The kernel's ledger charged each slice's new tokens once.
            assert (await client.show(long.run_id)).record.output_tokens == 120
    return order, outputs, fake


async def test_rr_lets_a_short_generation_pass_a_long_one(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    order, outputs, fake = await finishing_order(temporal, postgres, "rr")
    assert order == ["short", "long"]
    # Sliced fifteen times, the long generation is still the one uninterrupted generation.
    assert outputs["long"] == "120 " + expected_text(fake, "tell a long story", 120)
    assert len(fake.requests) == 1 + 120 // 8
    # Each continuation was the same generation: its prefix came from the server's cache.
    resumed = fake.requests[2:]
    assert all(r.cached_tokens >= len(r.body["input_ids"]) - 1 for r in resumed)

    order, _, fake = await finishing_order(temporal, postgres, "fifo")
    assert order == ["long", "short"]
    assert len(fake.requests) == 2


async def test_slices_grow_the_history_by_their_own_tokens_only(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    """A continuation names the suspended generation: the prompt is in the history once."""
    prompt = " ".join(f"word{i}" for i in range(2000))
    async with FakeSGLangServer(eos=False) as fake:
        settings = sglang_settings(
            temporal, postgres, fake, scheduler={"policy": "rr", "slice_tokens": 4}
        )
        async with workers(settings), await KernosClient.connect(settings) as client:
            handle = await client.submit(RunSpec(agent="length", task=f"80 {prompt}"))
            result = await handle.result()
            history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
            hijack = await client.submit(
                RunSpec(
                    agent="hijack",
                    task=f"{settings.temporal.llm_queue_prefix}{fake.served_model_name} "
                    f"{fake.served_model_name} {await generation_of(client, handle.run_id)}",
                )
            )
            hijacked = await hijack.result()
    assert result.output == "80 " + expected_text(fake, prompt, 80)
    continues = [
        e for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "llm.continue"
    ]  # fmt: skip
    assert len(continues) == 80 // 4 - 1
    # The prompt is in two events, the run's input and the first slice's request; copying the
    # request into each of the 19 continuations would put it in 19 more.
    sizes = [e.ByteSize() for e in history.events]
    assert sum(1 for size in sizes if size > len(prompt) // 2) == 2, sorted(sizes)[-4:]
    assert sum(sizes) < 2 * len(prompt) + 20 * 4096, sum(sizes)
    # Another run cannot continue this run's generation, even knowing its name.
    assert hijacked.output.startswith("denied: ")
    assert "has no suspended generation" in hijacked.output


async def generation_of(client: KernosClient, run_id: str) -> str:
    async with client.pool.connection() as conn:
        cursor = await conn.execute("SELECT id FROM generations WHERE run_id = %s", (run_id,))
        row = await cursor.fetchone()
    assert row is not None
    return str(row["id"])


async def test_rr_on_an_openai_server_resumes_by_text(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, keep_history: KeepHistory
) -> None:
    """No token ids on the chat API: each slice sends the text so far for the server to go on."""
    words = [f"w{i}" for i in range(40)]
    async with FakeOpenAIServer(lambda body: " ".join(words)) as fake:
        instance = {
            "name": "chat", "kind": "openai", "model": "chat", "base_url": fake.base_url,
            "slots": 1, "text_resume": "prefill",
        }  # fmt: skip
        settings = make_settings(
            temporal, postgres, llm=[instance], scheduler={"policy": "rr", "slice_tokens": 4}
        )
        async with workers(settings), await KernosClient.connect(settings) as client:
            handle = await client.submit(RunSpec(agent="length", task="30 go on"))
            result = await handle.result()
            record = (await client.show(handle.run_id)).record
            await keep_history(client.temporal, handle.run_id, "length-sliced-continued")
    assert result.output == "30 " + " ".join(words[:30])
    assert record.output_tokens == 30  # each slice charged its own tokens once
    assert len(fake.requests) == 30 // 4 + 1
    for index, request in enumerate(fake.requests):
        assert request.body["max_tokens"] == min(4, 30 - 4 * index)
        last = request.body["messages"][-1]
        written = " ".join(words[: 4 * index])
        assert last == ({"role": "assistant", "content": written} if index else last)


async def test_rr_on_llama_cpp_chat_api_continues_the_answer(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, llama: LlamaServer
) -> None:
    """The real llama-server continues a final assistant message (its default prefill)."""
    instance = {
        "name": "local", "kind": "openai", "model": MODEL_ALIAS, "base_url": llama.base_url,
        "slots": 2, "text_resume": "prefill",
    }  # fmt: skip
    settings = make_settings(
        temporal, postgres, llm=[instance], scheduler={"policy": "rr", "slice_tokens": 8}
    )
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="length", task="40 Tell me about the sea."))
        result = await asyncio.wait_for(handle.result(), 120)
        history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT slices, counted, text FROM generations WHERE run_id = %s",
                (handle.run_id,),
            )
            row = await cursor.fetchone()
    continues = [
        e for e in history.events
        if e.activity_task_scheduled_event_attributes.activity_type.name == "llm.continue"
    ]  # fmt: skip
    count, _, text = result.output.partition(" ")
    assert row is not None
    # Sliced into 8-token pieces unless the model stopped first; the server's counts add up.
    assert len(continues) == row["slices"] - 1 >= 1
    assert int(count) == row["counted"] <= 40
    assert text == row["text"] and text.strip()
