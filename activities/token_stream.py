"""A generation's text written as `llm.delta` events while it grows, for the run's followers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kernos.kernel.run_events import RunEventLog

log = logging.getLogger(__name__)


class TokenStream:
    """Writes what a generation adds, at most once per `interval_s`, and the rest at its end.

    Followers already hold `sent` (earlier slices, or what a crashed attempt had heartbeated):
    the first event starts where it ends. A write that fails is logged and skipped; the next
    one carries its text, since each says where it starts. A generation never waits for one.
    One that ends within its first interval, from nothing, writes none: its text comes with
    the syscall's result, and the syscalls of a run cost no more write for it.
    """

    def __init__(
        self,
        log_: RunEventLog,
        run_id: str,
        generation: str,
        model: str,
        sent: str,
        interval_s: float,
    ) -> None:
        self._log = log_
        self._run_id = run_id
        self._generation = generation
        self._model = model
        self._sent = sent
        self._latest = sent
        self._interval_s = interval_s
        self._pending: asyncio.Task[None] | None = None
        #: Followers have (or were sent) part of this generation's text.
        self._streaming = bool(sent)
        #: The pending write has woken and is writing: it is let finish, not cancelled.
        self._writing = False

    def note(self, text: str) -> None:
        """The generation's text so far; written within `interval_s`."""
        self._latest = text
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._write_after(self._interval_s))

    async def finish(self, text: str) -> None:
        """The generation's whole text: what followers lack of it is written now."""
        if self._pending is not None:
            self.abandon()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
        self._latest = text
        if self._streaming:
            await self._write()

    def abandon(self) -> None:
        """The attempt failed: nothing more is written (a retry goes on from its heartbeat)."""
        if self._pending is not None and not self._writing:
            self._pending.cancel()

    async def _write_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._writing = True
        try:
            await self._write()
        finally:
            self._writing = False

    async def _write(self) -> None:
        self._streaming = True
        latest, sent = self._latest, self._sent
        offset = _shared_prefix(sent, latest)
        if offset == len(sent) == len(latest):
            return
        try:
            await self._log.append_delta(
                self._run_id, self._generation, self._model, offset, latest[offset:]
            )
        except Exception as exc:  # noqa: BLE001 - followers lose a delta, never the generation
            log.warning("llm.delta of %s not written: %s", self._generation, exc)
            return
        self._sent = latest


def _shared_prefix(sent: str, latest: str) -> int:
    """How many characters the two texts share from the start."""
    if latest.startswith(sent):
        return len(sent)
    shared = 0
    for a, b in zip(sent, latest, strict=False):
        if a != b:
            break
        shared += 1
    return shared
