"""Anchoring the audit chains outside PostgreSQL, in the history of a Temporal workflow.

Someone who can write the database can rewrite a tenant's chain from some row on and recompute
every hash after it: the chain still holds. They cannot rewrite Temporal's history too, so each
head a kernel worker anchored there pins its chain: `kernos audit verify` checks that the row at
each anchored position still has the anchored hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

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
        await self._client.start_workflow(
            "AuditAnchor",  # workflows.audit_anchor, by name: the kernel does not import workflows
            AnchoredHeads(),
            id=self._settings.audit.anchor_workflow_id,
            task_queue=self._settings.temporal.kernel_task_queue,
            start_signal="anchor",
            start_signal_args=[AnchoredHeads(heads=current)],
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


async def read_anchors(client: Client, workflow_id: str) -> dict[str, ChainHead]:
    """The furthest head anchored for each chain, read from the anchor workflow's history.

    Read from the history itself (its latest execution's carried heads and every signal that a
    client sent), not by a query, so no worker is needed and no worker's memory is trusted.
    Signals from other workflows are ignored: agent code can signal any workflow by id. A signal
    sent while the workflow's task is in flight enters the history when that task completes, so
    the newest head can lag by a moment.
    """
    handle = client.get_workflow_handle(workflow_id)
    found: dict[str, ChainHead] = {}
    try:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                signaled = event.workflow_execution_signaled_event_attributes
                if signaled.signal_name != "anchor" or signaled.HasField(
                    "external_workflow_execution"
                ):
                    continue
                payloads = signaled.input.payloads
            else:
                continue
            try:
                [value] = await client.data_converter.decode(list(payloads), [AnchoredHeads])
            except (ValueError, TypeError, RuntimeError):  # a malformed payload anchors nothing
                continue
            if isinstance(value, AnchoredHeads):
                _merge(found, value.heads)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return {}
        raise
    return found


def _merge(found: dict[str, ChainHead], anchored: list[ChainHead]) -> None:
    for head in anchored:
        known = found.get(head.chain)
        if known is None or head.seq > known.seq:
            found[head.chain] = head
