"""The pipe between a pool's host and its confined child: length-prefixed frames.

A frame is its length (4 bytes), a kind (1 byte), the request it belongs to (8 bytes) and a
body. The host sends pickles and protobufs; the child answers only with protobufs (a workflow
activation's completion) or UTF-8 text, which the host parses as untrusted input: nothing the
child sends is unpickled.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from typing import IO, NamedTuple

import temporalio.workflow

#: Host to child: what the child serves (body: a pickled `ChildSetup`, sent once), an instance
#: to make (request: the instance's id; body: a pickled `InstanceSpec`), an activation of one
#: (body: the instance's id, 8 bytes, then the activation), an instance to drop once its
#: activation running now is done (request: the instance's id; its answer is not awaited).
SETUP, CREATE, ACTIVATE, DROP = b"S", b"C", b"A", b"D"
#: Child to host: it has started (sent once, before the setup), it has loaded the packages any
#: pool's code may import (sent once, after READY), an activation's completion (body: the CPU
#: time its thread spent on it, in microseconds, 8 bytes, then the completion), an error's
#: message.
READY, LOADED, COMPLETION, ERROR = b"R", b"L", b"K", b"E"

#: The largest frame either side accepts: completions carry payloads (2 MiB each at most).
MAX_FRAME = 256 * 1024 * 1024
_HEADER = struct.Struct(">IcQ")


@dataclass(frozen=True)
class ChildSetup:
    """What a pool's child serves."""

    pool: str
    agents: dict[str, str]
    """Agent name -> `module:Class`, imported (inside the sandbox) when a run uses it."""
    results_checked: bool
    """Whether the host checks syscall results' seals before the child sees them."""


@dataclass(frozen=True)
class InstanceSpec:
    """What the child needs to make a workflow instance like the one the host's worker made."""

    workflow: tuple[str, str]
    """The workflow class, by module and qualified name."""
    info: temporalio.workflow.Info
    randomness_seed: int
    last_completion_result: bytes
    last_failure: bytes | None
    disable_eager_activity_execution: bool


class Frame(NamedTuple):
    """One message on the pipe."""

    kind: bytes
    request: int
    body: bytes


class FrameError(Exception):
    """The other side sent something that is not a frame, or closed the pipe."""


class FrameWriter:
    """Writes frames to a stream, one at a time from any thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: bytes, request: int, body: bytes) -> None:
        """Write one frame and flush it."""
        data = self.frame(kind, request, body)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()

    @staticmethod
    def frame(kind: bytes, request: int, body: bytes) -> bytes:
        """One frame's bytes."""
        if len(body) > MAX_FRAME:
            raise FrameError(f"a frame of {len(body)} bytes is over the {MAX_FRAME} allowed")
        return _HEADER.pack(len(body), kind, request) + body


def receive(stream: IO[bytes], limit: int = MAX_FRAME) -> Frame:
    """The next frame on `stream` (FrameError at its end, or if malformed or over `limit`)."""
    header = _read(stream, _HEADER.size)
    length, kind, request = _HEADER.unpack(header)
    if length > limit:
        raise FrameError(f"a frame of {length} bytes is over the {limit} allowed")
    return Frame(kind, request, _read(stream, length))


def _read(stream: IO[bytes], size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise FrameError("the pipe closed")
        data += chunk
    return bytes(data)


#: The bytes before a completion: the activation's CPU time, in microseconds.
CPU_TIME_BYTES = 8


def completion_body(cpu_s: float, completion: bytes) -> bytes:
    """A completion frame's body: the CPU time the activation took, then the completion."""
    return max(0, round(cpu_s * 1_000_000)).to_bytes(CPU_TIME_BYTES, "big") + completion


def read_completion(body: bytes) -> tuple[float, bytes]:
    """The CPU seconds an activation took, as the child says, and its completion."""
    cpu = int.from_bytes(body[:CPU_TIME_BYTES], "big") / 1_000_000
    return cpu, body[CPU_TIME_BYTES:]
