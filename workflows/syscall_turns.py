"""A run's turns for syscalls: at most `max_pending_syscalls` pending, counted as the host does.

A pool's host counts what a run's code leaves pending (`run_limits.RunBounds`) and fails a run
past its limit. It counts a syscall cancelled the default way (Temporal answers the run at once)
until its attempt's `start_to_close` is up, since the kernel may run it till then. The SDK keeps
an honest run inside the same count: a cancelled syscall keeps its turn that long, and a syscall
past the limit waits for a turn. Otherwise honest code that cancels in a loop (`wait_for`
timeouts) would be failed for a limit the SDK had said it kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import is_cancelled_exception

Answer = TypeVar("Answer")

#: Runs that began before this version give a cancelled syscall's turn back at once.
HELD_TURNS_PATCH = "kernos-cancelled-syscalls-keep-their-turn"


class SyscallTurns:
    """Turns for a run's pending syscalls; one held by each cancelled syscall until it ends."""

    def __init__(self, limit: int, held_until: Sequence[float] = ()) -> None:
        self._limit = limit
        self._in_flight: dict[int, timedelta] = {}
        self._next = 0
        #: When each cancelled syscall's turn comes back (workflow time, as the host reckons).
        self._held_until = list(held_until)
        self._waiting = 0
        #: The one timer that wakes the waiters when a held turn comes back.
        self._waker: asyncio.Task[None] | None = None

    async def run(
        self,
        execute: Callable[[], Awaitable[Answer]],
        start_to_close: timedelta,
        *,
        cancellation_waits: bool = False,
    ) -> Answer:
        """Run `execute`, a syscall whose attempts may take `start_to_close`, in a turn.

        Past the limit it waits for a turn. `cancellation_waits` says that a cancellation of
        the syscall is answered only once the kernel's attempt has ended, so the turn need not
        be held after it. Below the limit nothing yields: a run's commands are what they were.
        """
        if not self._free():
            await self._turn_comes()
        turn = self._next
        self._next += 1
        self._in_flight[turn] = start_to_close
        try:
            return await execute()
        except BaseException as exc:
            if (
                not cancellation_waits
                and is_cancelled_exception(exc)
                and workflow.patched(HELD_TURNS_PATCH)
            ):
                self._held_until.append(_after(start_to_close))
            raise
        finally:
            del self._in_flight[turn]

    def held_until(self) -> list[float]:
        """When each turn now taken comes back, as the run continues as new.

        A closed execution's syscalls are answered to no one, but the kernel runs each until
        its attempt's time is up, and the host counts them in the next execution.
        """
        now = workflow.time()
        return [
            *(_after(start_to_close) for start_to_close in self._in_flight.values()),
            *(until for until in self._held_until if until > now),
        ]

    def _free(self) -> bool:
        now = workflow.time()
        self._held_until = [until for until in self._held_until if until > now]
        return len(self._in_flight) + len(self._held_until) < self._limit

    async def _turn_comes(self) -> None:
        self._waiting += 1
        try:
            while not self._free():
                if self._held_until and self._waker is None:
                    self._waker = asyncio.create_task(self._wake_as_held_turns_return())
                await workflow.wait_condition(self._free)
        finally:
            self._waiting -= 1

    async def _wake_as_held_turns_return(self) -> None:
        """Sleep till the first held turn comes back, while anyone waits for one."""
        try:
            while self._waiting and self._held_until:
                await workflow.sleep(max(min(self._held_until) - workflow.time(), 0.001))
                self._free()
        finally:
            self._waker = None


def _after(start_to_close: timedelta) -> float:
    """When an attempt started now has surely ended: the activation's time, as the host reads it."""
    return workflow.time() + start_to_close.total_seconds()
