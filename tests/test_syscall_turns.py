"""The SDK's turns for a run's syscalls, on a clock of the test's own (no server).

Workflow time moves only when the test moves it, and `workflow.wait_condition` is re-checked
whenever the event loop turns, as Temporal re-checks conditions after each step of a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from kernos.workflows import syscall_turns
from kernos.workflows.syscall_turns import HELD_TURNS_PATCH, SyscallTurns

ATTEMPT = timedelta(seconds=30)


class Clock:
    """What `SyscallTurns` asks of `temporalio.workflow`: its time, patches, timers, waits."""

    def __init__(self, *, patched: bool = True) -> None:
        self.now = 1000.0
        self.timers: list[float] = []
        self._patched = patched

    def time(self) -> float:
        return self.now

    def patched(self, patch_id: str) -> bool:
        assert patch_id == HELD_TURNS_PATCH
        return self._patched

    async def sleep(self, seconds: float) -> None:
        self.timers.append(seconds)
        until = self.now + seconds
        while self.now < until:  # noqa: ASYNC110 - the test moves time; each loop turn looks
            await asyncio.sleep(0)

    async def wait_condition(self, ready: Callable[[], bool]) -> None:
        while not ready():  # noqa: ASYNC110 - re-checked at each turn, as Temporal does
            await asyncio.sleep(0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(syscall_turns, "workflow", clock)
    return clock


async def cancelled() -> None:
    """A syscall Temporal answered as cancelled at once (the SDK's default cancellation)."""
    raise asyncio.CancelledError


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def cancel_in_turn(turns: SyscallTurns, **options: Any) -> None:
    with pytest.raises(asyncio.CancelledError):
        await turns.run(cancelled, ATTEMPT, **options)


def started(into: list[str], name: str) -> Callable[[], Awaitable[str]]:
    async def execute() -> str:
        into.append(name)
        return name

    return execute


async def test_a_cancelled_syscall_keeps_its_turn_until_its_attempt_is_over(clock: Clock) -> None:
    turns = SyscallTurns(limit=2)
    await cancel_in_turn(turns)
    await cancel_in_turn(turns)
    ran: list[str] = []
    third = asyncio.ensure_future(turns.run(started(ran, "third"), ATTEMPT))
    await settle()
    # Both turns are held as the pool's host counts them: the third waits, on one timer.
    assert ran == [] and clock.timers == [30.0]
    clock.now = 1029.9
    await settle()
    assert ran == []
    clock.now = 1030.0
    assert await asyncio.wait_for(third, 1) == "third"
    assert turns.held_until() == []


async def test_one_timer_wakes_every_waiter(clock: Clock) -> None:
    turns = SyscallTurns(limit=1)
    await cancel_in_turn(turns)
    ran: list[str] = []
    waiting = [asyncio.ensure_future(turns.run(started(ran, f"w{n}"), ATTEMPT)) for n in range(5)]
    await settle()
    assert clock.timers == [30.0]
    clock.now = 1030.0
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [f"w{n}" for n in range(5)]
    assert ran == [f"w{n}" for n in range(5)]


async def test_a_cancellation_answered_after_the_kernel_holds_nothing(clock: Clock) -> None:
    turns = SyscallTurns(limit=1)
    await cancel_in_turn(turns, cancellation_waits=True)
    ran: list[str] = []
    assert await turns.run(started(ran, "next"), ATTEMPT) == "next"
    assert clock.timers == []


async def test_a_run_begun_before_held_turns_gives_its_turn_back_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(syscall_turns, "workflow", Clock(patched=False))
    turns = SyscallTurns(limit=1)
    await cancel_in_turn(turns)
    ran: list[str] = []
    assert await turns.run(started(ran, "next"), ATTEMPT) == "next"


async def test_turns_taken_go_on_into_the_next_execution(clock: Clock) -> None:
    turns = SyscallTurns(limit=3)
    await cancel_in_turn(turns)
    clock.now = 1010.0
    release = asyncio.Event()

    async def pending() -> None:
        await release.wait()

    running = asyncio.ensure_future(turns.run(pending, timedelta(seconds=5)))
    await settle()
    # Continuing as new now: the cancelled one till 1030, the one in flight till 1015.
    carried = sorted(turns.held_until())
    assert carried == [1015.0, 1030.0]
    release.set()
    await running

    following = SyscallTurns(limit=2, held_until=carried)
    ran: list[str] = []
    waiting = asyncio.ensure_future(following.run(started(ran, "after"), ATTEMPT))
    await settle()
    assert ran == []
    clock.now = 1015.0
    assert await asyncio.wait_for(waiting, 1) == "after"
