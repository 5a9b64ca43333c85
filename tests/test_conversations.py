"""Conversations kept by the kernel, compaction, and step agents that continue as new."""

from __future__ import annotations

import uuid

from kernos import KernosClient, RunSpec, ScriptedBackend
from kernos.activities.context import SUMMARY_INSTRUCTION, ContextWindow
from kernos.infra.llama import MODEL_ALIAS, LlamaServer
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import ContextSettings
from kernos.kernel.conversations import ConversationStore
from kernos.kernel.syscalls import CompactRequest, LLMRequest, Message
from tests.conftest import KeepHistory, make_settings, workers


def diary_reply(request: LLMRequest) -> str:
    """A short summary when asked for one, else a short acknowledgement of the entry."""
    if request.messages[0].content == SUMMARY_INSTRUCTION:
        entries = request.messages[-1].content.count("entry ")
        return f"summary of {entries} entries"
    return "noted " + request.messages[-1].content.split(":")[0]


async def test_a_long_run_keeps_everything_across_continue_as_new_and_compaction(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, keep_history: KeepHistory
) -> None:
    settings = make_settings(
        temporal,
        postgres,
        llm=[{"name": "scripted", "kind": "scripted", "model": "scripted", "context_window": 200}],
        limits={"continue_as_new_events": 40},
    )
    backend = ScriptedBackend([diary_reply] * 100, context_window=200)
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(RunSpec(agent="diary", task="16"))
        result = await handle.result()
        executions = [
            e async for e in client.temporal.list_workflows(f'WorkflowId = "{handle.run_id}"')
        ]
        store = ConversationStore(client.pool)
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT id FROM conversations WHERE run_id = %s", (handle.run_id,)
            )
            (row,) = await cursor.fetchall()
        history = await store.history(row["id"], handle.run_id)
        active = await store.active(row["id"], handle.run_id)
        view = await client.show(handle.run_id)
        await keep_history(client.temporal, handle.run_id, "diary-continue-as-new")
    # The state came through every continue-as-new: all sixteen replies, in order.
    assert result.output.splitlines() == [f"noted entry {n}" for n in range(16)]
    assert len(executions) >= 2, "the run never continued as new"
    # Every message is kept; compaction only took old turns out of the model's context.
    originals = [m for m in history if not m.is_summary]
    assert [m.content.split(":")[0] for m in originals if m.role == "user"] == [
        f"entry {n}" for n in range(16)
    ]
    assert sum(1 for m in originals if m.role == "assistant") == 16
    summaries = [m for m in history if m.is_summary]
    assert len(summaries) >= 2, "the conversation should pass the threshold twice"
    # The second summary took in the first: one summary is ever in the context.
    assert sum(1 for m in active if m.is_summary) == 1
    assert len(active) < len(history)
    assert active[0].role == "system" and active[0].content == "You keep a diary."
    assert any(c.syscall == "llm.compact" for c in view.syscalls)
    assert result.syscalls == 1 + 16 + len(summaries)  # open, one chat per step, compactions


async def test_a_run_cannot_use_another_runs_conversation(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(temporal, postgres)
    async with workers(settings), await KernosClient.connect(settings) as client:
        mine = await (await client.submit(RunSpec(agent="chatter", task="hello"))).result()
        conversation_id = mine.output.split(" ")[0]
        other = await client.submit(
            RunSpec(agent="chatter", task=f"{conversation_id} scripted tell me everything")
        )
        stolen = (await other.result()).output
    assert stolen.startswith("AccessDenied: ")
    assert f"has no conversation {conversation_id!r}" in stolen


async def test_conversation_on_llama_is_compacted_by_the_model(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, llama: LlamaServer
) -> None:
    """The real model writes the summary; the window comes from the server (a slot's 1024)."""
    settings = make_settings(
        temporal,
        postgres,
        llm=[
            {"name": "local", "kind": "llamacpp", "model": MODEL_ALIAS, "base_url": llama.base_url}
        ],
        context={"compact_ratio": 0.25, "keep_ratio": 0.125},
    )
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="diary", task="8"))
        result = await handle.result()
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT id FROM conversations WHERE run_id = %s", (handle.run_id,)
            )
            (row,) = await cursor.fetchall()
        history = await ConversationStore(client.pool).history(row["id"], handle.run_id)
        too_long = await client.submit(RunSpec(agent="chatter", task="word " * 1500))
        refused = (await too_long.result()).output
    assert len(result.output.splitlines()) >= 1
    summaries = [m for m in history if m.is_summary]
    assert summaries and all(m.content.strip() for m in summaries)
    assert sum(1 for m in history if m.role == "user") == 8
    # One message alone over the window: the error names both sizes.
    assert refused.startswith("ContextTooLong: the new message is 15")
    assert "the model's context window is 1024 tokens" in refused


async def test_compaction_summarises_the_fewest_oldest_turns_that_make_the_rest_fit(
    kernos_client: KernosClient,
) -> None:
    """Window 200 words, keep half: the rest plus a 16-word summary must fit in 100."""
    store = ConversationStore(kernos_client.pool)
    run_id = f"run-compact-{uuid.uuid4().hex[:8]}"
    conversation = f"conv-{run_id}"
    await store.open(
        conversation, run_id=run_id, tenant="t", agent="a", model="m", system="be brief now"
    )
    ten_words = " ".join(["word"] * 9)
    for index in range(10):
        exchange = [
            Message(role="user", content=f"question{index} {ten_words}"),
            Message(role="assistant", content=f"answer{index} {ten_words}"),
        ]
        await store.append(conversation, run_id, exchange, f"turn-{index}")
    settings = ContextSettings(compact_ratio=0.75, keep_ratio=0.5, summary_tokens=16)
    backend = ScriptedBackend(["a summary"], context_window=200)
    manager = ContextWindow(backend, store, settings)
    done = await manager.compact(
        CompactRequest(model="m", conversation=conversation), run_id, "compact-1", lambda _: None
    )
    active = await store.active(conversation, run_id)
    # 3 system words + 20 per kept exchange <= 100 - 16 keeps 4 exchanges; 6 are summarised.
    assert done.summarized == 12
    # After: the system prompt, the summary under its 5-word heading, and 4 exchanges.
    assert (done.tokens_before, done.tokens_after) == (203, 3 + 5 + 2 + 80)
    assert [m.content.split()[0] for m in active] == ["be", "a"] + [
        f"{kind}{index}" for index in range(6, 10) for kind in ("question", "answer")
    ]
    # Everything is kept; the summary replaced only the six oldest exchanges.
    assert len(await store.history(conversation, run_id)) == 1 + 20 + 1
    transcript = backend.requests[0].messages[-1].content
    assert "question5" in transcript and "question6" not in transcript
