"""Spans leave over OTLP/HTTP when `telemetry.otlp_endpoint` is set."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from kernos import Settings
from tests.conftest import workers
from tests.processes import environment, to_toml


class CollectorStub:
    """Accepts OTLP/HTTP posts and keeps them (path, content type, body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.posts.append((request.split(" ")[1], headers.get("content-type", ""), body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_cli_exports_spans_over_otlp(settings: Settings, tmp_path: Path) -> None:
    collector = CollectorStub()
    port = await collector.start()
    config = tmp_path / "kernos.toml"
    traced = settings.model_copy(
        update={
            "telemetry": settings.telemetry.model_copy(
                update={"otlp_endpoint": f"http://127.0.0.1:{port}/v1/traces"}
            )
        }
    )
    config.write_text(to_toml(traced))
    try:
        async with workers(settings):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kernos.cli", "--config", str(config),
                "run", "echo", "traced", "--json",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=environment(),
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, err.decode()
        run_id = json.loads(out)["run_id"]
    finally:
        await collector.stop()
    assert collector.posts, "no OTLP export reached the collector"
    path, content_type, body = collector.posts[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"StartWorkflow:AgentRun" in body
    assert run_id.encode() in body
