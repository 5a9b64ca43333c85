"""Anchoring the audit chains outside PostgreSQL, in the history of a Temporal workflow.

Someone who can write the database can rewrite a tenant's chain from some row on and recompute
every hash after it: the chain still holds. They cannot rewrite Temporal's history too, so each
head a kernel worker anchored there pins its chain: `kernos audit verify` checks that the row at
every anchored position still has the anchored hash (all of them: anchoring the rewritten chain
again does not hide the rewrite from the anchors before it). Kernel workers sign what they
anchor (`[audit] anchor_key`); a signal anyone else sent is ignored and named.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from pydantic import BaseModel
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from kernos.kernel.anchor_sink import AnchorSink
from kernos.kernel.audit_chain import AnchoredHeads, ChainHead, heads
from kernos.kernel.config import Settings
from kernos.kernel.db.pool import Pool

log = logging.getLogger(__name__)


class Anchorer:
    """A kernel worker's loop: every interval, signal the chains' heads when they moved."""

    def __init__(self, pool: Pool, client: Client, settings: Settings) -> None:
        self._pool = pool
        self._client = client
        self._settings = settings
        self._sent: list[ChainHead] | None = None
        self._stop = asyncio.Event()

    async def anchor_once(self) -> bool:
        """Anchor the current heads (starting the workflow if need be); False if none moved."""
        current = await heads(self._pool)
        if not current or current == self._sent:
            return False
        anchored = AnchoredHeads(heads=current)
        audit = self._settings.audit
        key = audit.anchor_key.get_secret_value() if audit.anchor_key is not None else None
        sunk = None
        if audit.anchor_sink is not None:
            # The sink's line first: Temporal then records the very same, signed line.
            sink = AnchorSink(audit.anchor_sink)
            try:
                sunk = await asyncio.to_thread(sink.append, anchored, key)
            except (OSError, ValueError):
                # A sink that cannot be written (or was broken) stops no anchor reaching
                # Temporal; `kernos audit verify` reports the sink.
                log.exception("appending to the anchor sink %s failed", audit.anchor_sink)
        if sunk is not None:
            anchored = sunk
        elif key is not None:
            anchored = anchored.signed(key)
        await self._client.start_workflow(
            "AuditAnchor",  # workflows.audit_anchor, by name: the kernel does not import workflows
            AnchoredHeads(),
            id=self._settings.audit.anchor_workflow_id,
            task_queue=self._settings.temporal.kernel_task_queue,
            start_signal="anchor",
            start_signal_args=[anchored],
        )
        self._sent = current
        return True

    async def run(self) -> None:
        """Anchor now, then every `audit.anchor_interval_s`, until `stop`."""
        interval = self._settings.audit.anchor_interval_s
        if interval <= 0:
            return
        while not self._stop.is_set():
            try:
                await self.anchor_once()
            except Exception:  # a missed anchor is retried next interval; the worker goes on
                log.exception("anchoring the audit chains failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def stop(self) -> None:
        """End `run` at its next wake-up."""
        self._stop.set()


class Anchors(BaseModel):
    """Every anchor kernel workers sent, by chain, and what disagrees among their records."""

    chains: dict[str, list[ChainHead]] = {}
    signals: list[AnchoredHeads] = []
    """The signals taken from Temporal, as sent."""
    ignored: list[str] = []
    """Anchor signals not signed with the kernel's key, each named: someone else sent them."""
    problems: list[str] = []
    """Where the anchor sink and Temporal's history disagree, or the sink breaks."""

    def take(self, anchored: AnchoredHeads) -> None:
        """Count `anchored`'s heads among the anchors of their chains."""
        for head in anchored.heads:
            self.chains.setdefault(head.chain, []).append(head)


async def all_anchors(client: Client, settings: Settings) -> Anchors:
    """Every anchor, from Temporal's history and from the anchor sink, each checked by the other.

    Each line Temporal recorded must be in the sink as it was sent.
    """
    audit = settings.audit
    key = audit.anchor_key.get_secret_value() if audit.anchor_key is not None else None
    anchors = await read_anchors(client, audit.anchor_workflow_id, key)
    if audit.anchor_sink is None:
        return anchors
    reading = await asyncio.to_thread(AnchorSink(audit.anchor_sink).read, key)
    if reading.problem is not None:
        anchors.problems.append(reading.problem)
    for line in reading.anchors:
        anchors.take(line)
    for signal in anchors.signals:
        number = signal.sink_line
        if number is None:
            continue
        kept = reading.anchors[number - 1] if number <= len(reading.anchors) else None
        if kept != signal:
            anchors.problems.append(
                f"Temporal recorded anchor sink line {number}, which the sink "
                + ("does not hold" if kept is None else "holds differently")
                + f" ({audit.anchor_sink}): the sink was cut short or rewritten"
            )
    return anchors


async def read_anchors(client: Client, workflow_id: str, key: str | None = None) -> Anchors:
    """Every anchor in the anchor workflow's histories, in every execution still kept.

    Read from the histories themselves (every signal a client sent), not by a query, so no
    worker is needed and no worker's memory is trusted. With `key` (`[audit] anchor_key`), only
    signals it signed count; the others are ignored and named, since anyone who reaches
    Temporal can signal the workflow. Signals from other workflows are ignored: agent code can
    signal any workflow by id. A signal sent while the workflow's task is in flight enters the
    history when that task completes, so the newest anchor can lag by a moment. Executions
    past the namespace's retention are gone, and their anchors with them.
    """
    found = Anchors()
    for run_id in await _executions(client, workflow_id):
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        try:
            async for event in handle.fetch_history_events():
                await _read_signal(client, event, run_id, key, found)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    return found


async def _executions(client: Client, workflow_id: str) -> list[str]:
    """The run ids of the workflow's executions the server still keeps, oldest first."""
    runs: list[tuple[datetime, str]] = []
    async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"'):
        runs.append((execution.start_time, execution.run_id))
    ordered = [run_id for _, run_id in sorted(runs)]
    try:
        # Visibility lags behind: the current execution, asked for by id, is never missed.
        latest = (await client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return ordered
    return ordered if latest in ordered else [*ordered, latest]


async def _read_signal(
    client: Client, event: HistoryEvent, run_id: str, key: str | None, found: Anchors
) -> None:
    if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
        return
    signaled = event.workflow_execution_signaled_event_attributes
    if signaled.signal_name != "anchor" or signaled.HasField("external_workflow_execution"):
        return
    where = f"signal {event.event_id} of execution {run_id} (from {signaled.identity!r})"
    try:
        [value] = await client.data_converter.decode(list(signaled.input.payloads), [AnchoredHeads])
    except (ValueError, TypeError, RuntimeError):
        found.ignored.append(f"{where}: not anchored heads")
        return
    if not isinstance(value, AnchoredHeads):
        found.ignored.append(f"{where}: not anchored heads")
        return
    if key is not None and not value.signed_with(key):
        found.ignored.append(f"{where}: not signed with the kernel's anchor key")
        return
    found.signals.append(value)
    found.take(value)
