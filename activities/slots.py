"""One LLM instance's slots: how much work its workers take, and whether they take any.

The workers of an instance (its pool queue's and, with cache affinity, its own queue's) draw
from one set of slots, so the instance runs about as many generations as it has slots. While
its server cannot be reached no slot is handed out: its workers take no new work, and the
pool's tasks go to the instances that can run them. A probe of the server's health opens the
slots again.
"""

from __future__ import annotations

import asyncio
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


class _Permit(SlotPermit):
    def __init__(self, soft: bool) -> None:
        super().__init__()
        self.soft = soft


class InstanceSlots(CustomSlotSupplier):
    """About `slots` activities at once, and none while the server is down.

    The kernel's workers count an instance's `slots + queued` here: the calls it generates and
    those sent ahead to wait at its server.

    Temporal reserves a slot before each poll, so an idle poller holds one. The pool queue's
    pollers take slots outright. The affinity queue's pollers take "soft" slots that count only
    once they carry a task, so idle pollers of one queue never starve the other; the price is
    that the instance can run one task over its slots per affinity poller (give that worker a
    single poller).
    """

    def __init__(
        self,
        slots: int,
        health: HealthCheck | None = None,
        *,
        affinity_queue: str | None = None,
        probe_interval_s: float = 0.5,
    ) -> None:
        self._slots = slots
        self._affinity_queue = affinity_queue
        self._held = 0  # pool permits out, used or not
        self._held_used = 0
        self._soft = 0  # affinity permits out, used or not
        self._soft_used = 0
        self._changed = asyncio.Event()
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
                    self._changed.set()
                    return
            await asyncio.sleep(self._probe_interval_s)

    def _grant(self, soft: bool) -> _Permit | None:
        if not self._up.is_set():
            return None
        if soft:
            if self._held_used + self._soft >= self._slots:
                return None
            self._soft += 1
        else:
            if self._held + self._soft_used >= self._slots:
                return None
            self._held += 1
        return _Permit(soft)

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        """Wait until the instance is up and has room for this queue's poller."""
        soft = ctx.task_queue == self._affinity_queue
        while (permit := self._grant(soft)) is None:
            self._changed.clear()
            await self._changed.wait()
        return permit

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        """Room now, or None."""
        return self._grant(ctx.task_queue == self._affinity_queue)

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        """The permit now carries a task."""
        if isinstance(ctx.permit, _Permit) and ctx.permit.soft:
            self._soft_used += 1
        else:
            self._held_used += 1

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        """Give the permit back; wake whoever waits for room."""
        used = ctx.slot_info is not None
        if isinstance(ctx.permit, _Permit) and ctx.permit.soft:
            self._soft -= 1
            self._soft_used -= used
        else:
            self._held -= 1
            self._held_used -= used
        self._changed.set()

    async def aclose(self) -> None:
        """Stop probing."""
        if self._probe is not None:
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe
