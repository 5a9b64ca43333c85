"""A minimal HTTP/1.1 server for fake model servers.

JSON and server-sent-event responses, one request per connection, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """A parsed request."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    disconnected: Callable[[], bool]


@dataclass
class JSONResponse:
    """A JSON body with a status."""

    payload: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TextResponse:
    """A plain-text body (Prometheus metrics)."""

    text: str
    status: int = 200


@dataclass
class EventStream:
    """Server-sent events: each item is one `data:` line's JSON (or a raw string)."""

    events: AsyncIterator[Any]
    on_disconnect: Callable[[], None] = lambda: None


Response = JSONResponse | TextResponse | EventStream
Handler = Callable[[Request], Awaitable[Response]]


class MiniHTTPServer:
    """Routes `(method, path)` to handlers."""

    def __init__(self, routes: dict[tuple[str, str], Handler], port: int = 0) -> None:
        self.routes = routes
        self._port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The port it listens on (once started)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        """Its address, for a client."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (on a free port, unless one was given)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        self._port = self.port

    async def stop(self) -> None:
        """Stop listening and drop the connections still open."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            method, target, _ = request_line.split(" ", 2)
            url = urlsplit(target)
            handler = self.routes.get((method, url.path))
            if handler is None:
                await _write_json(writer, JSONResponse({"detail": "Not Found"}, 404))
                return
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError as exc:
                await _write_json(writer, JSONResponse({"detail": f"bad JSON: {exc}"}, 422))
                return
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            response = await handler(Request(method, url.path, query, body, reader.at_eof))
            if isinstance(response, EventStream):
                await _write_events(reader, writer, response)
            elif isinstance(response, TextResponse):
                await _write(writer, response.status, "text/plain", response.text.encode(), {})
            else:
                await _write_json(writer, response)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def _write(
    writer: asyncio.StreamWriter,
    status: int,
    content_type: str,
    data: bytes,
    headers: dict[str, str],
) -> None:
    extra = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\n{extra}Connection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()


async def _write_json(writer: asyncio.StreamWriter, response: JSONResponse) -> None:
    data = json.dumps(response.payload).encode()
    await _write(writer, response.status, "application/json", data, response.headers)


async def _write_events(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: EventStream
) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
    try:
        async for event in stream.events:
            data = event if isinstance(event, str) else json.dumps(event)
            writer.write(f"data: {data}\n\n".encode())
            await writer.drain()
            if reader.at_eof():
                raise ConnectionResetError("client went away")
    except ConnectionError:
        stream.on_disconnect()
        raise
