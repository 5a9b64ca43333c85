"""One instance's slots, shared by the workers that poll its pool and its affinity queue."""

from __future__ import annotations

import asyncio
from collections import deque

from temporalio.worker import (
    CustomSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
)


class SharedSlots(CustomSlotSupplier):
    """At most `slots` activities at once, whichever of the instance's queues they come from.

    A poller holds a permit while it polls, so each worker should poll with few pollers, or
    idle pollers of one queue hold permits the other queue's work could use.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        """Wait for a free slot (first come, first served)."""
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
        if self._free > 0 and not self._waiting:
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
