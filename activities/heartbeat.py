"""Heartbeating a long activity on a clock, whatever the pace of its progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from pydantic import BaseModel
from temporalio import activity


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
            activity.heartbeat(details.model_dump() if isinstance(details, BaseModel) else details)

    task = asyncio.create_task(loop())
    try:
        yield beat
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
