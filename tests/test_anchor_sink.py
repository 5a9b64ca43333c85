"""The anchor sink: every anchor in an append-only file, checked against Temporal's history."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from threading import Thread

import pytest

from kernos import KernosClient, Settings
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.anchor_sink import AnchorSink
from kernos.kernel.audit_anchor import Anchors, all_anchors
from kernos.kernel.audit_chain import AnchoredHeads, ChainHead, verify
from tests.conftest import make_settings, workers
from tests.test_audit import (
    ANCHOR_KEY,
    first_anchored_from,
    rewrite_from,
    rows_of,
    run_steps,
    tenant_name,
)
from tests.waiting import eventually

KEY = "k"


def heads(n: int) -> AnchoredHeads:
    return AnchoredHeads(heads=[ChainHead(chain="t", seq=n, hash=f"{n:064x}")])


def test_lines_are_linked_signed_and_numbered(tmp_path: Path) -> None:
    sink = AnchorSink(tmp_path / "audit" / "anchors.jsonl")
    written = [sink.append(heads(n), KEY) for n in range(1, 4)]
    assert [line.sink_line for line in written] == [1, 2, 3]
    reading = sink.read(KEY)
    assert (reading.problem, reading.anchors) == (None, written)
    assert sink.read("another key").problem == (
        f"anchor sink {sink.path}, line 1: not signed with the kernel's anchor key"
    )


def test_a_line_rewritten_removed_or_inserted_breaks_the_sink(tmp_path: Path) -> None:
    sink = AnchorSink(tmp_path / "anchors.jsonl")
    for n in range(1, 5):
        sink.append(heads(n), KEY)
    lines = sink.path.read_bytes().splitlines(keepends=True)
    forged = json.loads(lines[1])
    forged["heads"][0]["hash"] = "f" * 64
    edited = [lines[0], json.dumps(forged).encode() + b"\n", *lines[2:]]
    for variant, number in (
        (edited, 2),  # rewritten: its signature no longer holds
        ([lines[0], *lines[2:]], 2),  # removed: line 3 does not follow line 1
        ([lines[0], lines[0], *lines[1:]], 2),  # inserted again
    ):
        sink.path.write_bytes(b"".join(variant))
        problem = sink.read(KEY).problem or ""
        assert problem.startswith(f"anchor sink {sink.path}, line {number}: "), problem


def test_workers_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    sink = AnchorSink(tmp_path / "anchors.jsonl")
    threads = [
        Thread(target=lambda n=n: [sink.append(heads(n * 100 + i), KEY) for i in range(25)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reading = sink.read(KEY)
    assert reading.problem is None
    assert len(reading.anchors) == 100


def sinking(temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path) -> Settings:
    audit = {"anchor_interval_s": 0.2, "anchor_key": ANCHOR_KEY,
             "anchor_sink": str(tmp_path / "anchors.jsonl")}  # fmt: skip
    return make_settings(temporal, postgres, audit=audit)


async def anchored_at(client: KernosClient, settings: Settings, tenant: str, seq: int) -> Anchors:
    def reached(anchors: Anchors) -> bool:
        # In the sink first, then in Temporal's history: wait for both.
        in_temporal = [h.seq for s in anchors.signals for h in s.heads if h.chain == tenant]
        return max(in_temporal, default=0) >= seq

    return await eventually(
        lambda: all_anchors(client.temporal, settings), reached,
        what=f"chain {tenant} anchored at {seq} in Temporal",
    )  # fmt: skip


async def test_the_sink_and_temporal_each_catch_what_the_other_lost(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = sinking(temporal, postgres, tmp_path)
    tenant = tenant_name()
    async with workers(settings), await KernosClient.connect(settings) as client:
        await run_steps(settings, client, tenant, 4)
        anchors = await anchored_at(client, settings, tenant, 4)
        rows = await rows_of(client, tenant)
    assert (anchors.ignored, anchors.problems) == ([], [])
    assert anchors.signals and all(s.sink_line is not None for s in anchors.signals)

    async with await KernosClient.connect(settings) as client:
        # The anchor workflow is gone (terminated, or past retention): the sink still holds
        # every anchor, and a consistent rewrite of the chain is caught by it alone.
        gone = settings.audit.model_copy(update={"anchor_workflow_id": f"gone-{uuid.uuid4()}"})
        rewrite_from(postgres, rows, 1, "nothing to see here")
        from_sink = await all_anchors(client.temporal, settings.model_copy(update={"audit": gone}))
        [check] = await verify(client.pool, from_sink.chains, tenant)
        assert not check.ok
        assert check.broken_id == first_anchored_from(rows, from_sink.chains[tenant], 1)

        # The sink cut short: Temporal's history still names the lines it lost.
        sink = Path(str(settings.audit.anchor_sink))
        lines = sink.read_bytes().splitlines(keepends=True)
        sink.write_bytes(b"".join(lines[:-1]))
        cut = await all_anchors(client.temporal, settings)
    assert any(
        f"Temporal recorded anchor sink line {len(lines)}, which the sink does not hold" in p
        for p in cut.problems
    ), cut.problems


def test_a_sink_with_garbage_is_reported_and_refuses_to_grow(tmp_path: Path) -> None:
    sink = AnchorSink(tmp_path / "anchors.jsonl")
    sink.append(heads(1), KEY)
    with sink.path.open("ab") as file:
        file.write(b"not an anchor\n")
    assert sink.read(KEY).problem == f"anchor sink {sink.path}, line 2: not an anchor"
    # The worker logs it and still anchors in Temporal (kernel.audit_anchor.Anchorer).
    with pytest.raises(ValueError):
        sink.append(heads(2), KEY)
