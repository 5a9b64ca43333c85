"""Heartbeating a long activity on a clock, whatever the pace of its progress.

What an attempt heartbeats is what a later attempt of the same activity resumes from (the
tokens generated so far). Another poller of the queue could heartbeat text of its own and fail
its attempt, for the next honest one to carry on from it; so kernel workers sign their
heartbeats with a key only they hold (`SIGNING`, set per activity by the interceptor), and an
attempt resumes only from a heartbeat that verifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel
from temporalio import activity

#: The key this activity's heartbeats are signed and checked with (None: not signed).
SIGNING: ContextVar[bytes | None] = ContextVar("kernos_heartbeat_key", default=None)


def _mac(key: bytes, details: Any) -> str:
    info = activity.info()
    mac = hmac.new(key, b"kernos-heartbeat-v1", hashlib.sha256)
    for part in (info.workflow_id or "", info.workflow_run_id or "", info.activity_id):
        mac.update(len(part).to_bytes(8, "big") + part.encode())
    mac.update(json.dumps(details, sort_keys=True, separators=(",", ":")).encode())
    return mac.hexdigest()


def last_heartbeat() -> Any:
    """What an earlier attempt of this activity heartbeat, if a kernel worker signed it."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    key = SIGNING.get()
    if key is None:
        return details[0]
    if len(details) < 2 or not hmac.compare_digest(str(details[1]), _mac(key, details[0])):
        activity.logger.warning("an earlier attempt's heartbeat is not signed: not resumed from")
        return None
    return details[0]


class _Beat:
    def __init__(self) -> None:
        self.details: Any = None

    def __call__(self, details: Any) -> None:
        self.details = details


@asynccontextmanager
async def heartbeating() -> AsyncIterator[_Beat]:
    """Heartbeat the latest reported progress every third of the heartbeat timeout.

    A server that is slow to send its first token still gets a live activity, and the worker
    learns of a cancellation within a heartbeat interval. The first beat waits an interval too:
    a generation that ends sooner needs none, and a beat is a round trip to the server.
    """
    timeout = activity.info().heartbeat_timeout
    interval = timeout.total_seconds() / 3 if timeout else 10.0
    beat = _Beat()

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            details = beat.details
            # Serialised when sent, not per token: a long generation reports often.
            data = details.model_dump(mode="json") if isinstance(details, BaseModel) else details
            key = SIGNING.get()
            activity.heartbeat(*((data, _mac(key, data)) if key is not None else (data,)))

    task = asyncio.create_task(loop())
    try:
        yield beat
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
