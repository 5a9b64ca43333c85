"""One LLM instance's slots: how much work its workers take, and whether they take any.

The workers of an instance (its pool queue's and, with cache affinity, its own queue's) draw
from one set of slots, so the instance never runs more than its slots at once. While the
instance's server cannot be reached, no slot is handed out: its workers take no new work, and
the pool's tasks go to the instances that can run them. A probe of the server's health opens
the slots again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress

from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)

HealthCheck = Callable[[], Awaitable[bool]]


class InstanceSlots(CustomSlotSupplier):
    """At most `slots` activities at once, and none while the server is down.

    A poller holds a permit while it polls, so each worker should poll with few pollers, or
    idle pollers of one queue hold permits the other queue's work could use.
    """

    def __init__(
        self, slots: int, health: HealthCheck | None = None, probe_interval_s: float = 0.5
    ) -> None:
        self._free = slots
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._health = health
        self._probe_interval_s = probe_interval_s
        self._up = asyncio.Event()
        self._up.set()
        self._probe: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Whether the instance takes work."""
        return self._up.is_set()

    def mark_down(self) -> None:
        """The server could not be reached: take no work until its health probe passes."""
        if not self._up.is_set() or self._health is None:
            return
        self._up.clear()
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        assert self._health is not None
        while True:
            with suppress(Exception):
                if await self._health():
                    self._up.set()
                    return
            await asyncio.sleep(self._probe_interval_s)

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        """Wait until the instance is up and a slot is free (first come, first served)."""
        await self._up.wait()
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return SlotPermit()
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(handed)
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self._give_back()  # handed a slot just as the wait was cancelled
            elif handed in self._waiting:
                self._waiting.remove(handed)
            raise
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        """A free slot now, or None."""
        if self._up.is_set() and self._free > 0 and not self._waiting:
            self._free -= 1
            return SlotPermit()
        return None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        """Nothing to track."""

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        """Give the slot back: to the longest waiter, if any."""
        self._give_back()

    def _give_back(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    async def aclose(self) -> None:
        """Stop probing."""
        if self._probe is not None:
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe
