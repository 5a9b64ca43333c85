"""A run's live events: followed as they happen, resumed after the last one seen, the key
holder's own only, written by the kernel alone."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from kernos import KernosClient, RunSpec, Settings
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel import run_events
from kernos.kernel.errors import RunNotFound
from kernos.kernel.run_events import (
    EVENT,
    ApprovalDecided,
    ApprovalRequested,
    FileWritten,
    MemoryWritten,
    RunEvent,
    RunFinished,
    RunStarted,
    SyscallDecided,
    SyscallFinished,
    TokenDelta,
)
from kernos.remote import RemoteClient
from kernos.testing.fake_openai import FakeOpenAIServer
from tests.conftest import workers
from tests.processes import environment
from tests.test_approvals import approval_settings, charge
from tests.test_cli import config_file
from tests.test_gateway import kernel_and_gateway
from tests.test_memory import CountingEmbedder

ANSWER = " ".join(f"word{n}" for n in range(30))


def generated(events: list[RunEvent]) -> dict[str, str]:
    """Each generation's text, as a follower puts it together from the deltas."""
    texts: dict[str, str] = {}
    for event in events:
        if isinstance(event, TokenDelta):
            texts[event.generation] = event.apply(texts.get(event.generation, ""))
    return texts


def writing_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    server: FakeOpenAIServer,
) -> Settings:  # fmt: skip
    """Settings whose one model is `server`'s, its text written as events every 0.1 s."""
    instance = {"name": "fake", "kind": "openai", "model": "fake-model",
                "base_url": server.base_url}  # fmt: skip
    return approval_settings(
        temporal, postgres, tmp_path, "events", llm=[instance], events={"token_interval_s": 0.1}
    )


async def test_a_followed_run_shows_its_syscalls_and_tokens_as_they_happen(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    async with FakeOpenAIServer(lambda body: ANSWER, token_delay_s=0.04) as server:
        settings = writing_settings(temporal, postgres, tmp_path, server)
        async with workers(settings), await KernosClient.connect(settings) as client:
            handle = await client.submit(RunSpec(agent="echo", task="hello"))
            events: list[RunEvent] = []
            answered_when_first_seen: int | None = None
            async for event in client.stream(handle.run_id):
                if isinstance(event, TokenDelta) and answered_when_first_seen is None:
                    answered_when_first_seen = len(server.completed())
                events.append(event)
            result = await handle.result()
            again = [event async for event in client.stream(handle.run_id, after=3)]

    assert result.output == ANSWER
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert isinstance(events[0], RunStarted) and events[0].agent == "echo"
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    kinds = [event.kind for event in events]
    chat = [e for e in events if isinstance(e, SyscallDecided) and e.syscall == "llm.chat"]
    assert len(chat) == 1 and chat[0].decision == "allow" and chat[0].reason is None
    finished = [e for e in events if isinstance(e, SyscallFinished) and e.syscall == "llm.chat"]
    assert len(finished) == 1 and finished[0].output_tokens > 0
    deltas = [e for e in events if isinstance(e, TokenDelta)]
    # The text came in pieces, while the model was still generating, between its decision and
    # its result; put together, the pieces are the answer.
    assert len(deltas) >= 3, kinds
    assert answered_when_first_seen == 0
    assert events.index(chat[0]) < events.index(deltas[0]) < events.index(finished[0])
    assert list(generated(events).values()) == [ANSWER]
    assert {delta.model for delta in deltas} == {"fake-model"}
    # Followed again after the third event: the same events from the fourth on.
    assert again == events[3:]


async def test_approvals_memory_and_files_show_as_the_run_makes_them(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"events-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    script = [
        {"op": "add", "content": "The launch is on Tuesday."},
        {"op": "storage.write", "path": "notes/a.md", "content": "first"},
        charge(5),
    ]
    async with (
        workers(settings, embedder=CountingEmbedder()),
        await KernosClient.connect(settings) as client,
    ):
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(script), tenant=tenant))
        events: list[RunEvent] = []
        async for event in client.stream(handle.run_id):
            events.append(event)
            if isinstance(event, ApprovalRequested):
                # A UI that follows the run answers the request it sees.
                await client.approve(handle.run_id, user="alice", reason="looks right")
        await handle.result()

    memory = [e for e in events if isinstance(e, MemoryWritten)]
    assert len(memory) == 1 and memory[0].scope == "agent/memo"
    files = [e for e in events if isinstance(e, FileWritten)]
    assert [(f.path, f.version, f.size, f.action) for f in files] == [("notes/a.md", 1, 5, "write")]
    [asked] = [e for e in events if isinstance(e, ApprovalRequested)]
    [decided] = [e for e in events if isinstance(e, ApprovalDecided)]
    assert (asked.syscall, asked.resource) == ("tool.call", "tool:charge")
    assert (decided.approval_id, decided.status, decided.decided_by, decided.reason) == (
        asked.approval_id, "approved", "alice", "looks right",
    )  # fmt: skip
    tool_decisions = [
        (e.decision, e.reason is not None)
        for e in events
        if isinstance(e, SyscallDecided) and e.syscall == "tool.call"
    ]
    # Refused while waiting (with the reason agent code would read), then allowed.
    assert tool_decisions == [("deny", True), ("allow", False)]
    order = [type(e) for e in events]
    assert order.index(MemoryWritten) < order.index(FileWritten) < order.index(ApprovalRequested)
    assert order.index(ApprovalRequested) < order.index(ApprovalDecided) < order.index(RunFinished)
    assert isinstance(events[-1], RunFinished)


async def test_a_key_holder_follows_its_own_runs_through_the_gateway_and_resumes(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"events-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    async with kernel_and_gateway(settings) as (url, operator):
        _, bobs = await operator.create_key(user="bob", tenant=tenant)
        _, eves = await operator.create_key(user="eve", tenant=tenant)
        async with RemoteClient(url, bobs) as bob, RemoteClient(url, eves) as eve:
            run_id = await bob.submit({"agent": "echo", "task": "hello"})
            events = [event async for event in bob.stream(run_id)]
            with pytest.raises(RunNotFound):
                [event async for event in eve.stream(run_id)]
        async with httpx.AsyncClient(base_url=url) as http:
            auth = {"Authorization": f"Bearer {bobs}"}
            resumed = await http.get(
                f"/v1/runs/{run_id}/events", headers={**auth, "Last-Event-ID": "2"}
            )
            bad = await http.get(f"/v1/runs/{run_id}/events?after=x", headers=auth)

    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert events[0].user == "bob" and events[-1].status == "completed"
    assert resumed.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in resumed.text.split("\n\n") if block.strip()]
    ids = [int(block.split("\n")[0].removeprefix("id: ")) for block in blocks]
    assert ids == [event.seq for event in events[2:]]
    data = [EVENT.validate_json(block.split("data: ", 1)[1]) for block in blocks]
    assert data == events[2:]
    assert bad.status_code == 400 and "Last-Event-ID (or after)" in bad.json()["error"]["message"]


async def test_the_kernels_role_writes_no_event_but_a_generations_text(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    # Whoever holds the kernel's credentials (a kernel worker) appends deltas only: it cannot
    # say a run finished, or was approved, where the record does not.
    settings = approval_settings(temporal, postgres, tmp_path, "events")
    async with await KernosClient.connect(settings) as client:
        # No worker polls its queue: the run stays admitted, its events open.
        handle = await client.submit(RunSpec(agent="echo", task="hello"))
    forged = json.dumps({"status": "completed", "input_tokens": 0, "output_tokens": 0})
    async with await psycopg.AsyncConnection.connect(postgres.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "SELECT run_event_append(%s, 'run.finished', %s)", (handle.run_id, forged)
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "INSERT INTO run_events (run_id, seq, kind, data) VALUES (%s, 999, 'x', '{}')",
                (handle.run_id,),
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("DELETE FROM run_events WHERE run_id = %s", (handle.run_id,))
        cursor = await conn.execute(
            "SELECT run_event_delta(%s, 'g', 'm', 0, 'hi')", (handle.run_id,)
        )
        row = await cursor.fetchone()
        await client.temporal.get_workflow_handle(handle.run_id).terminate("test over")
    assert row is not None and row[0] == 2  # after run.started


async def test_a_follower_that_starts_late_or_after_the_end_gets_everything_and_stops(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = approval_settings(temporal, postgres, tmp_path, "events")
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="steps", task="3"))
        await handle.result()
        whole = [event async for event in client.stream(handle.run_id)]
        past_the_end = await asyncio.wait_for(
            _collect(client.stream(handle.run_id, after=whole[-1].seq)), 10
        )
    assert isinstance(whole[-1], RunFinished)
    assert sum(isinstance(e, SyscallFinished) and e.syscall == "llm.chat" for e in whole) == 3
    assert past_the_end == []


async def _collect(events: AsyncIterator[RunEvent]) -> list[RunEvent]:
    return [event async for event in events]


def _read_terminal(master: int, seen_first: list[int], server: FakeOpenAIServer) -> bytes:
    """What the terminal at `master` shows until its last writer closes it."""
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer has closed the terminal
            return shown
        if not chunk:
            return shown
        shown += chunk
        if not seen_first and b"word0" in shown:
            seen_first.append(len(server.completed()))


async def test_kernos_run_on_a_terminal_shows_the_answer_as_the_model_writes_it(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    async with FakeOpenAIServer(lambda body: ANSWER, token_delay_s=0.04) as server:
        settings = writing_settings(temporal, postgres, tmp_path, server)
        config = config_file(settings, tmp_path)
        master, terminal = pty.openpty()
        seen_first: list[int] = []
        async with workers(settings):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kernos.cli", "--config", str(config),
                "run", "echo", "hello", stdout=terminal, stderr=terminal, env=environment(),
            )  # fmt: skip
            os.close(terminal)
            reading = asyncio.get_running_loop().run_in_executor(
                None, _read_terminal, master, seen_first, server
            )
            code = await asyncio.wait_for(process.wait(), 120)
            shown = (await asyncio.wait_for(reading, 30)).decode()
        os.close(master)
    assert code == 0, shown
    # The first words were on the screen while the model was still writing the rest.
    assert seen_first == [0]
    # The answer is shown once: as written, not again at the end.
    assert shown.count(ANSWER) == 1, shown
    assert "\x1b[2K" in shown and " syscalls · " in shown
    assert "1 syscalls" in shown.splitlines()[-2]


async def test_a_follower_is_woken_by_the_database_not_by_its_own_clock(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # With its own look every two minutes, only the NOTIFY of a run it follows brings it the
    # run's events before the test's wait ends.
    monkeypatch.setattr(run_events, "POLL_S", 120.0)
    settings = approval_settings(temporal, postgres, tmp_path, "events")
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="pausing", task="2"))
        events = await asyncio.wait_for(_collect(client.stream(handle.run_id)), 60)
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    assert sum(isinstance(e, SyscallFinished) and e.syscall == "llm.chat" for e in events) == 2
