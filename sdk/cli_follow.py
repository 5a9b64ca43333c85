"""`kernos run` following its run as it happens.

On a terminal, each generation's text appears as the model writes it, and a status line below
says what the run is doing (syscalls, tokens, seconds, a wait for a human). Piped, nothing is
redrawn: a line on stderr for each thing a person must know (a wait for approval, a refusal),
and the answer once, at the end, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TextIO

from kernos.kernel.run_events import (
    ApprovalDecided,
    ApprovalRequested,
    RunEvent,
    RunFinished,
    SyscallDecided,
    SyscallFinished,
    TokenDelta,
)

#: How often the status line's seconds move on.
TICK_S = 0.25
#: Erase the terminal's current line and go back to its start.
_ERASE = "\r\x1b[2K"


class RunFollower:
    """Shows a run's events: live on a terminal, as plain lines otherwise."""

    def __init__(self, run_id: str, out: TextIO, err: TextIO, *, live: bool) -> None:
        self.run_id = run_id
        self.out = out
        self.err = err
        self.live = live
        self.syscalls = 0
        self.tokens = 0
        self.doing = "starting"
        #: Each generation's text as generated, what of it is on the screen, and the one being
        #: shown now.
        self.generated: dict[str, str] = {}
        self.shown: dict[str, str] = {}
        self.current: str | None = None
        self._started = time.monotonic()
        self._status_drawn = False
        #: The terminal's cursor is after text of a generation, not at a line's start.
        self._mid_line = False

    @property
    def last_text(self) -> str:
        """What the screen shows of the generation shown last ("" if none was)."""
        return self.shown.get(self.current, "") if self.current is not None else ""

    async def follow(self, events: AsyncIterator[RunEvent]) -> None:
        """Show events until the run ends (or the caller stops following)."""
        ticking = asyncio.create_task(self._tick()) if self.live else None
        try:
            async for event in events:
                self.show(event)
                if isinstance(event, RunFinished):
                    return
        finally:
            if ticking is not None:
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
            self._erase_status()
            self._end_line()

    def show(self, event: RunEvent) -> None:
        """One event."""
        if isinstance(event, TokenDelta):
            self._text(event)
            return
        if isinstance(event, SyscallDecided):
            self.doing = event.syscall
            if event.decision == "deny" and event.reason and "approval" not in event.reason:
                self._line(f"{event.syscall} on {event.resource} refused: {event.reason}")
        elif isinstance(event, SyscallFinished):
            self.syscalls += 1
            self.tokens += event.input_tokens + event.output_tokens
            self.doing = "thinking"
        elif isinstance(event, ApprovalRequested):
            self.doing = "awaiting approval"
            self._line(
                f"{event.syscall} on {event.resource} awaits a human's approval: "
                f"kernos approve {self.run_id} (or deny)"
            )
        elif isinstance(event, ApprovalDecided):
            by = f" by {event.decided_by}" if event.decided_by else ""
            self._line(f"{event.syscall} on {event.resource}: {event.status}{by}")
        self._draw_status()

    def _text(self, delta: TokenDelta) -> None:
        generated = delta.apply(self.generated.get(delta.generation, ""))
        self.generated[delta.generation] = generated
        before = self.shown.get(delta.generation, "")
        if not self.live:
            self.current = delta.generation
            return
        self._erase_status()
        if delta.generation != self.current:
            if self.current is not None:
                self._end_line()
                self.out.write("\n")
            self.current = delta.generation
        # A retried attempt may rewrite what was shown: what is on the screen stays, and only
        # text that extends it is added (the answer is printed whole at the end if it differs).
        added = generated[len(before) :] if generated.startswith(before) else ""
        if added:
            self.shown[delta.generation] = generated
            self.out.write(added)
            self.out.flush()
            self._mid_line = not added.endswith("\n")

    def _end_line(self) -> None:
        """Put the terminal's cursor at a line's start."""
        if self.live and self._mid_line:
            self.out.write("\n")
            self.out.flush()
            self._mid_line = False

    def _line(self, text: str) -> None:
        """A line of its own on stderr, after whatever text is on the screen."""
        self._erase_status()
        self._end_line()
        self.err.write(f"{text}\n")
        self.err.flush()

    def _status(self) -> str:
        seconds = time.monotonic() - self._started
        return f"{self.doing} · {self.syscalls} syscalls · {self.tokens} tokens · {seconds:.1f} s"

    def _draw_status(self) -> None:
        # Only at the start of a line: mid-way through a generation's text, the text is the
        # progress.
        if not self.live or self._mid_line:
            return
        self.err.write(f"{_ERASE}{self._status()}")
        self.err.flush()
        self._status_drawn = True

    def _erase_status(self) -> None:
        if self._status_drawn:
            self.err.write(_ERASE)
            self.err.flush()
            self._status_drawn = False

    async def _tick(self) -> None:
        while True:
            self._draw_status()
            await asyncio.sleep(TICK_S)
