"""A small OpenAI-compatible chat server for tests: it streams, records every request, and can
be told to fail, to be slow, or to go away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    """One request the server received."""

    body: dict[str, Any]
    completed: bool = False
    aborted: bool = False


@dataclass
class Failure:
    """An HTTP error to answer instead of a completion."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def default_reply(body: dict[str, Any]) -> str:
    return "reply to: " + str(body["messages"][-1]["content"])


class FakeOpenAIServer:
    """`POST /v1/chat/completions` with SSE streaming, on 127.0.0.1."""

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str] = default_reply,
        *,
        token_delay_s: float = 0.0,
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        self._port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeOpenAIServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        self._port = self.port
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def completed(self) -> list[Recorded]:
        return [r for r in self.requests if r.completed]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body_bytes = await reader.readexactly(int(headers.get("content-length", "0")))
            if not request_line.startswith(b"POST /v1/chat/completions"):
                await self._respond(writer, 404, {"error": {"message": "not found"}})
                return
            body = json.loads(body_bytes)
            record = Recorded(body)
            self.requests.append(record)
            if self.failures:
                failure = self.failures.pop(0)
                await self._respond(
                    writer, failure.status, {"error": {"message": failure.message}}, failure.headers
                )
                return
            await self._stream(reader, writer, record)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Recorded
    ) -> None:
        text = self.reply(record.body)
        words = text.split(" ")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        try:
            for index, word in enumerate(words):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                piece = word if index == 0 else " " + word
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await writer.drain()
                if reader.at_eof():
                    raise ConnectionResetError("client went away")
            prompt = sum(len(m["content"].split()) for m in record.body["messages"])
            final = {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(words)},
            }
            writer.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
            await writer.drain()
            record.completed = True
        except ConnectionError:
            record.aborted = True
            raise
