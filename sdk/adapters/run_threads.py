"""What an agent framework would hand to a thread runs in the run itself, in turn.

LangChain and the OpenAI client move synchronous work off the event loop with
`loop.run_in_executor` (a chat result's parsing, a synchronous tool, reading the platform), and
a run's event loop has no threads (Temporal's workflow loop refuses). For a framework's own
functions, the run's loop here runs them at once, in order, so a replay runs them the same way;
any other code's thread is refused as before, naming what to change. What is handed to the
loop "from another thread" (`call_soon_threadsafe`) is scheduled next, as `call_soon` would.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from kernos.kernel.errors import InvalidRequest
from kernos.workflows.framework_errors import FRAMEWORKS


def _innermost(function: Any) -> Any:
    """The function a `functools.partial` (asyncio wraps one in `ctx.run`) finally calls."""
    while isinstance(function, functools.partial):
        inner = function.func
        if getattr(inner, "__name__", None) == "run" and function.args:  # Context.run
            inner = function.args[0]
        function = inner
    return function


def _frameworks(function: Any) -> bool:
    module = getattr(_innermost(function), "__module__", None) or ""
    return module.partition(".")[0] in FRAMEWORKS


def in_the_run(loop: asyncio.AbstractEventLoop) -> None:
    """Have `loop` (a run's) run frameworks' thread work inline; idempotent."""
    if getattr(loop, "_kernos_in_the_run", False):
        return

    def run_in_executor(executor: Any, function: Callable[..., Any], *args: Any) -> Any:
        if not _frameworks(function):
            raise InvalidRequest(
                f"{getattr(_innermost(function), '__qualname__', function)!r} was sent to a "
                "thread, which a run does not have: call it directly (it may compute, not do I/O)"
            )
        done = loop.create_future()
        try:
            done.set_result(function(*args))
        except BaseException as exc:  # noqa: BLE001 - the awaiting code gets it, as from a thread
            done.set_exception(exc)
        return done

    loop.run_in_executor = run_in_executor  # type: ignore[method-assign,assignment]
    # LangGraph hands its stream's items (`stream_mode="messages"`) to the loop "from another
    # thread"; the run has no other, so that is scheduling them next, in order.
    loop.call_soon_threadsafe = loop.call_soon  # type: ignore[method-assign]
    loop._kernos_in_the_run = True  # type: ignore[attr-defined]
