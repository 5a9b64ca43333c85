"""An instance's slots: shared by its pool and affinity queues, closed while its server is down."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kernos.activities.slots import InstanceSlots


@dataclass
class Context:
    """What Temporal passes a slot supplier (the fields the supplier reads)."""

    task_queue: str = "pool"
    permit: Any = None
    slot_info: Any = None


def reserve_now(slots: InstanceSlots, queue: str) -> Any:
    return slots.try_reserve_slot(Context(task_queue=queue))  # type: ignore[arg-type]


def use(slots: InstanceSlots, permit: Any) -> None:
    slots.mark_slot_used(Context(permit=permit, slot_info=object()))  # type: ignore[arg-type]


def release(slots: InstanceSlots, permit: Any, used: bool) -> None:
    slots.release_slot(Context(permit=permit, slot_info=object() if used else None))  # type: ignore[arg-type]


async def test_an_idle_pool_poller_does_not_starve_the_affinity_queue() -> None:
    slots = InstanceSlots(1, affinity_queue="own")
    idle_pool = reserve_now(slots, "pool")
    assert idle_pool is not None
    assert reserve_now(slots, "pool") is None  # the pool has its one slot
    own = reserve_now(slots, "own")
    assert own is not None  # an unused pool permit leaves room for the affinity poller
    use(slots, own)
    assert reserve_now(slots, "own") is None  # one task running: the slot is taken
    release(slots, own, used=True)
    assert reserve_now(slots, "own") is not None


async def test_a_waiting_poller_gets_the_released_slot() -> None:
    slots = InstanceSlots(1)
    first = reserve_now(slots, "pool")
    use(slots, first)
    waiting = asyncio.create_task(slots.reserve_slot(Context()))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert not waiting.done()
    release(slots, first, used=True)
    assert await asyncio.wait_for(waiting, 1) is not None


async def test_no_slots_while_the_server_is_down_until_it_is_healthy() -> None:
    healthy = asyncio.Event()

    async def health() -> bool:
        return healthy.is_set()

    slots = InstanceSlots(2, health, probe_interval_s=0.01)
    slots.mark_down()
    assert not slots.up and reserve_now(slots, "pool") is None
    waiting = asyncio.create_task(slots.reserve_slot(Context()))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not waiting.done()
    healthy.set()
    assert await asyncio.wait_for(waiting, 1) is not None
    assert slots.up
    await slots.aclose()
