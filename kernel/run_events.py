"""A run's live events: what it is doing, as it happens, for clients that follow it.

The database writes them from what the kernel records (migration 0019): the run's admission
and end, each syscall's decision and result, approvals asked for and decided, memory items and
file versions written. Kernel workers add the one thing recorded nowhere else, a generation's
text as it grows (`llm.delta`). Agent code writes none. Each run's events are numbered from 1
in commit order, so a follower resumes after the last it saw and misses nothing, across a
gateway's or a client's restart; a commit wakes the run's followers with NOTIFY.

    async for event in client.stream(run_id):       # KernosClient, RemoteClient
        if isinstance(event, TokenDelta): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from psycopg import AsyncConnection
from pydantic import BaseModel, Field, TypeAdapter

from kernos.kernel.db.pool import Pool

log = logging.getLogger(__name__)

#: The channel a commit of events notifies, with the run's id.
CHANNEL = "kernos_run_events"
#: Longest a follower waits without a notification before it looks anyway: a notification
#: lost with the listening connection costs at most this.
POLL_S = 1.0
#: How many times longer a follower waits between its own looks while the feed listens.
LISTENING_POLLS = 15
#: Events read per query.
PAGE = 500
#: How long a follower's mark lasts; it renews it a third of the way: only runs that someone
#: follows notify (a NOTIFY costs every notifying commit a shared lock).
FOLLOWED_S = 60.0


class _Event(BaseModel):
    run_id: str
    seq: int
    """The event's place in its run's events, from 1: resume after it (`Last-Event-ID`)."""
    at: datetime


class RunStarted(_Event):
    """The kernel admitted the run."""

    kind: Literal["run.started"] = "run.started"
    agent: str
    tenant: str
    user: str
    model: str


class SyscallDecided(_Event):
    """The access manager's decision on one syscall attempt, as audited."""

    kind: Literal["syscall.decided"] = "syscall.decided"
    syscall: str
    resource: str
    decision: Literal["allow", "deny"]
    reason: str | None = None
    """Why it was refused (what agent code is told); None when allowed."""
    activity_id: str
    attempt: int


class SyscallFinished(_Event):
    """What an allowed syscall attempt came to."""

    kind: Literal["syscall.finished"] = "syscall.finished"
    syscall: str
    activity_id: str
    attempt: int
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    duration_ms: float


class TokenDelta(_Event):
    """A generation's text from `offset` on, as it grows.

    It replaces what earlier deltas of the generation said from `offset`: an attempt retried
    after a crash regenerates what the crashed one had sent past its last heartbeat.
    """

    kind: Literal["llm.delta"] = "llm.delta"
    generation: str
    """The `llm.chat` it belongs to (its `llm.continue` slices too)."""
    model: str
    offset: int
    text: str

    def apply(self, text: str) -> str:
        """The generation's text, `text` so far, with this delta applied."""
        return text[: self.offset] + self.text


class ApprovalRequested(_Event):
    """A syscall waits for a human's decision (`kernos approve`)."""

    kind: Literal["approval.requested"] = "approval.requested"
    approval_id: str
    syscall: str
    resource: str
    expires_at: datetime


class ApprovalDecided(_Event):
    """A human decided, or the request expired."""

    kind: Literal["approval.decided"] = "approval.decided"
    approval_id: str
    syscall: str
    resource: str
    status: Literal["approved", "denied", "expired"]
    decided_by: str | None = None
    reason: str | None = None


class MemoryWritten(_Event):
    """The run added a memory item."""

    kind: Literal["memory.written"] = "memory.written"
    id: str
    scope: str


class FileWritten(_Event):
    """The run wrote (or rolled back) a file: its new version."""

    kind: Literal["file.written"] = "file.written"
    path: str
    version: int
    size: int
    action: Literal["write", "rollback"]


class RunFinished(_Event):
    """The kernel recorded the run's end: no event follows.

    Except a correction of the end, where Temporal's word changes what was recorded first;
    followers have stopped by then.
    """

    kind: Literal["run.finished"] = "run.finished"
    status: Literal["completed", "failed", "cancelled"]
    error: str | None = None
    input_tokens: int
    output_tokens: int


RunEvent = Annotated[
    RunStarted | SyscallDecided | SyscallFinished | TokenDelta | ApprovalRequested
    | ApprovalDecided | MemoryWritten | FileWritten | RunFinished,
    Field(discriminator="kind"),
]  # fmt: skip
EVENT: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)


def event_of(row: dict[str, Any]) -> RunEvent:
    """An event from its row."""
    return EVENT.validate_python(
        {**row["data"], "run_id": row["run_id"], "seq": row["seq"], "at": row["at"],
         "kind": row["kind"]}
    )  # fmt: skip


class RunEventLog:
    """Reads runs' events; appends a generation's deltas (a kernel worker's only write)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def append_delta(
        self, run_id: str, generation: str, model: str, offset: int, text: str
    ) -> None:
        """Append `text` as the generation's text from `offset` on."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "SELECT run_event_delta(%s, %s, %s, %s, %s)",
                (run_id, generation, model, offset, text.replace("\x00", "\ufffd")),
            )

    async def read(self, run_id: str, after: int = 0, limit: int = PAGE) -> list[RunEvent]:
        """The run's events after `after`, oldest first."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT run_id, seq, at, kind, data FROM run_events"
                " WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (run_id, after, limit),
            )
            rows = await cursor.fetchall()
        return [event_of(row) for row in rows]

    async def _mark_followed(self, run_id: str) -> None:
        """Ask for the run's events to notify for the next `FOLLOWED_S`."""
        async with self._pool.connection() as conn:
            await conn.execute("SELECT run_event_follow(%s, %s)", (run_id, FOLLOWED_S))

    async def finished(self, run_id: str) -> bool:
        """Whether the kernel has recorded the run's end (or has no record of the run)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT finished_at IS NOT NULL AS done FROM runs WHERE run_id = %s", (run_id,)
            )
            row = await cursor.fetchone()
        return row is None or bool(row["done"])

    async def follow(self, run_id: str, feed: EventFeed, after: int = 0) -> AsyncIterator[RunEvent]:
        """The run's events after `after` as they come, until its `run.finished`.

        A run whose end is recorded and whose events are all read ends the iteration too (one
        that finished before events were kept, or followed from past its end).
        """
        with feed.watch(run_id) as woken:
            marked = -FOLLOWED_S
            while True:
                now = asyncio.get_running_loop().time()
                if now - marked > FOLLOWED_S / 3:
                    await self._mark_followed(run_id)
                    marked = now
                woken.clear()
                events = await self.read(run_id, after)
                for event in events:
                    after = event.seq
                    yield event
                    if isinstance(event, RunFinished):
                        return
                if len(events) == PAGE:
                    continue
                if not events and await self.finished(run_id):
                    # Its end may have committed since the read: read once more, then stop.
                    for event in await self.read(run_id, after):
                        yield event
                    return
                # While the feed listens, the database wakes the follower; its own looks are
                # for a notification lost in between, and need not be frequent.
                wait = POLL_S * (LISTENING_POLLS if feed.listening else 1)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), wait)


class EventFeed:
    """One listening connection that wakes this process's followers of runs' events.

    Without it (it could not connect, or its connection broke) followers look every `POLL_S`.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        #: The connection listens: followers are woken by the database.
        self.listening = False

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the run's events may have grown."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen())
        woken = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(woken)
        try:
            yield woken
        finally:
            watchers = self._watchers.get(run_id, set())
            watchers.discard(woken)
            if not watchers:
                self._watchers.pop(run_id, None)

    async def _listen(self) -> None:
        try:
            async with await AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                self.listening = True
                # Followers that started before the LISTEN read once more.
                self._wake_all()
                async for notice in conn.notifies():
                    for woken in self._watchers.get(notice.payload, ()):
                        woken.set()
        except psycopg.Error as exc:  # followers poll until the next watch listens again
            log.warning("run events: listening stopped (%s); followers poll", exc)
        finally:
            self.listening = False
            self._wake_all()

    def _wake_all(self) -> None:
        for watchers in self._watchers.values():
            for woken in watchers:
                woken.set()

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
