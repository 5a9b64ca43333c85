"""Spans for a run and its syscalls, linked from client to kernel worker, GenAI conventions."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

import pytest

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel import telemetry
from tests.agents import AGENTS
from tests.conftest import make_settings, workers
from tests.hostile import HOSTILE_AGENTS
from tests.waiting import eventually

# One tracer provider per process: every test that traces shares this file.
SPANS = Path(tempfile.mkdtemp(prefix="kernos-spans-")) / "spans.jsonl"


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "replayed-each-task"])
async def test_run_is_one_linked_trace(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, cached: bool
) -> None:
    """Also where the host keeps no run cached, so every workflow task replays the run."""
    settings = make_settings(temporal, postgres, telemetry={"spans_file": str(SPANS)})
    if not cached:
        no_cache = settings.temporal.model_copy(update={"max_cached_workflows": 0})
        settings = settings.model_copy(update={"temporal": no_cache})
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="planner", task="trace me", tenant="acme"))
        result = await handle.result()
    telemetry.flush()

    spans = telemetry.run_spans(SPANS, handle.run_id)
    assert len({span["trace_id"] for span in spans}) == 1, "client, workflow and activities link"
    names = [span["name"] for span in spans]
    assert "StartWorkflow:AgentRun" in names
    assert "RunWorkflow:AgentRun" in names
    assert names.count("StartActivity:llm.chat") == 2
    assert names.count("RunActivity:llm.chat") == 2
    chats = [span for span in spans if span["name"] == "chat scripted"]
    assert len(chats) == 2
    for chat in chats:
        attributes = chat["attributes"]
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "scripted"
        assert attributes["gen_ai.request.model"] == "scripted"
        assert attributes["gen_ai.usage.output_tokens"] > 0
    assert sum(c["attributes"]["gen_ai.usage.output_tokens"] for c in chats) == (
        result.usage.output_tokens
    )
    by_id = {span["span_id"]: span for span in spans}
    for chat in chats:  # the GenAI span sits under the kernel worker's activity span
        parent = by_id[chat["parent_id"]]
        assert parent["name"] == "RunActivity:llm.chat"
        assert parent["attributes"]["kernos.decision"] == "allow"
        assert parent["attributes"]["kernos.tenant"] == "acme"

    tree = telemetry.render_tree(spans)
    assert tree[0].startswith("StartWorkflow:AgentRun")
    assert any(line.startswith("    ") and "chat scripted" in line for line in tree)


async def test_a_run_whose_first_task_was_turned_back_has_one_workflow_span(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    """A task turned back over its pool's share of the slots never reaches the pool: the run's
    workflow span is made once, where its code first runs, not at each attempt."""
    # Two slots for tasks, a pool's share one, so one held task leaves no more than a share
    # free (the host is crowded): the tenant's holder takes its share for 5 s, and the
    # tenant's next run waits, however late its task comes within those seconds.
    isolation = {"mode": "bwrap", "task_slots": 3, "pool_share": 0.2}
    settings = make_settings(
        temporal,
        postgres,
        agents={**AGENTS, **HOSTILE_AGENTS},
        isolation=isolation,
        telemetry={"spans_file": str(SPANS)},
    )
    tenant = f"held-{uuid.uuid4().hex[:6]}"
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        pools = group.pools
        assert pools is not None

        def turned_back() -> int:
            return sum(p.turned_back for p in pools.status().pools if p.pool == tenant)

        holder = await client.submit(RunSpec(agent="holder", task="5", tenant=tenant))
        await eventually(
            lambda: any(p.pool == tenant and p.tasks for p in pools.status().pools),
            what="the holder's task runs",
        )
        await asyncio.sleep(1.5)  # held, by now
        handle = await client.submit(RunSpec(agent="planner", task="trace me", tenant=tenant))
        await eventually(turned_back, what="the run's first task turned back")
        await holder.result()
        await handle.result()
    telemetry.flush()

    names = [span["name"] for span in telemetry.run_spans(SPANS, handle.run_id)]
    assert names.count("RunWorkflow:AgentRun") == 1, names
    assert names.count("RunActivity:llm.chat") == 2
