"""The one way a test waits for what servers and workers do in their own time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import temporalio.client

T = TypeVar("T")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = ...,
    *,
    what: str,
    timeout_s: float = ...,
    every_s: float = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    until: Callable[[T], object] = ...,
    *,
    what: str,
    timeout_s: float = ...,
    every_s: float = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    until: Callable[[Any], object] = bool,
    *,
    what: str,
    timeout_s: float = 30.0,
    every_s: float = 0.1,
) -> Any:
    """The first value of `probe()` (a function or a coroutine function) for which `until` holds.

    Asked every `every_s`; past `timeout_s`, an AssertionError that says `what` was awaited
    and the last value seen.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        seen = probe()
        if inspect.isawaitable(seen):
            seen = await seen
        if until(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last seen: {seen!r:.800})")
        await asyncio.sleep(every_s)


async def until_timer(temporal: temporalio.client.Client, run_id: str) -> None:
    """Wait until the run's history holds a timer: its code has got as far as its first sleep."""

    async def has_timer() -> bool:
        history = await temporal.get_workflow_handle(run_id).fetch_history()
        return any(event.HasField("timer_started_event_attributes") for event in history.events)

    await eventually(has_timer, what=f"a timer in run {run_id}'s history", every_s=0.05)
