"""The anchor sink: every anchor, appended to a file outside PostgreSQL and Temporal.

Temporal's history keeps anchors only while the namespace retains the anchor workflow's
executions, and whoever reaches Temporal can terminate it. So each kernel worker also appends
every anchor it sends to an append-only JSON-lines file (`[audit] anchor_sink`), each line
naming the hash of the line before it and signed with the anchor key; the signal to Temporal
carries the same line. A sink cut short or rewritten no longer holds the line Temporal recorded,
and an anchor workflow lost or cut short still has its anchors in the sink: `kernos audit
verify` checks the sink's own links and signatures, and each of the two against the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from kernos.kernel.audit_chain import GENESIS, AnchoredHeads

#: The most a line can be: a head per tenant of a few hundred bytes, for a great many tenants.
_MAX_LINE = 64 * 1024 * 1024


def line_hash(line: bytes) -> str:
    """The SHA-256 of a sink line (its text, without the newline), hex."""
    return hashlib.sha256(line).hexdigest()


class SinkReading(BaseModel):
    """What a sink holds: its anchors, in order, and the first thing wrong with it."""

    anchors: list[AnchoredHeads] = []
    problem: str | None = None


class AnchorSink:
    """An append-only file of anchors; several kernel workers may append to it at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, anchored: AnchoredHeads, key: str | None) -> AnchoredHeads:
        """Append `anchored` as the sink's next line (signed with `key`); return that line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as handle:
            last = _last_line(handle)
            number, previous = (1, GENESIS.hex()) if last is None else _next_after(last)
            line = anchored.model_copy(update={"sink_line": number, "sink_prev": previous})
            if key is not None:
                line = line.signed(key)
            os.write(handle, line.model_dump_json().encode() + b"\n")
            os.fsync(handle)
        return line

    def read(self, key: str | None) -> SinkReading:
        """Every anchor in the sink, each checked: its number, its link, its signature."""
        reading = SinkReading()
        if not self.path.exists():
            return reading
        previous = GENESIS.hex()
        with self.path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                text = raw.rstrip(b"\n")
                where = f"anchor sink {self.path}, line {number}"
                try:
                    anchored = AnchoredHeads.model_validate_json(text)
                except ValidationError:
                    reading.problem = f"{where}: not an anchor"
                    return reading
                if anchored.sink_line != number or anchored.sink_prev != previous:
                    reading.problem = (
                        f"{where}: does not follow the line before (lines were removed, "
                        "inserted or rewritten)"
                    )
                    return reading
                if key is not None and not anchored.signed_with(key):
                    reading.problem = f"{where}: not signed with the kernel's anchor key"
                    return reading
                reading.anchors.append(anchored)
                previous = line_hash(text)
        return reading

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        handle = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield handle
        finally:
            os.close(handle)  # closing releases the lock


def _next_after(last: bytes) -> tuple[int, str]:
    """The number of the line after `last`, and `last`'s hash."""
    number = AnchoredHeads.model_validate_json(last).sink_line or 0
    return number + 1, line_hash(last)


def _last_line(handle: int) -> bytes | None:
    """The file's last line, read backwards from its end."""
    size = os.lseek(handle, 0, os.SEEK_END)
    if size == 0:
        return None
    block, tail = 4096, b""
    position = size
    while position > 0 and len(tail) < _MAX_LINE:
        step = min(block, position)
        position -= step
        tail = os.pread(handle, step, position) + tail
        body = tail.rstrip(b"\n")
        if b"\n" in body:
            return body.rsplit(b"\n", 1)[1]
    return tail.rstrip(b"\n") or None
