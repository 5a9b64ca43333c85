"""Two hosts: the kernel on one, an agent host on another that reaches Temporal and no more.

The second host is a network namespace joined to this one by a veth pair, as a machine on a
LAN would be. The kernel's workers, PostgreSQL and the test's servers stay here; the agent
host, started from a settings file without database credentials or LLM servers, reaches
Temporal over the link (through a forwarder on this side's address: the dev server listens
on loopback only). Its pools' children run confined as on one machine: a hostile probe in
one finds neither Temporal across the link, nor this host's servers, nor the kernel's
doors, while another tenant's run on the same agent host completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests.conftest import workers
from tests.hostile import hostile_settings, probe
from tests.processes import WorkerProcess, write_worker_configs

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2 (CI has both)",
)


@contextlib.contextmanager
def second_host() -> Iterator[tuple[str, str, str]]:
    """A network namespace linked to this one: its name, this side's address, and its own."""
    tag = secrets.token_hex(3)
    name, outside, inside = f"kernos-{tag}", f"kv{tag}a", f"kv{tag}b"
    subnet = f"10.213.{int(tag[:2], 16)}"
    here, there = f"{subnet}.1", f"{subnet}.2"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
        ["ip", "link", "set", inside, "netns", name],
        ["ip", "addr", "add", f"{here}/30", "dev", outside],
        ["ip", "link", "set", outside, "up"],
        ["ip", "-n", name, "addr", "add", f"{there}/30", "dev", inside],
        ["ip", "-n", name, "link", "set", inside, "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=10)
        yield name, here, there
    finally:
        # Deleting the namespace deletes its end of the pair, and with it the other end.
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=10)


@contextlib.asynccontextmanager
async def forwarder(listen: str, target: str) -> AsyncIterator[str]:
    """A TCP forwarder on `listen` to `target` (`host:port`); its own `host:port`."""
    host, _, port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(connect, listen, 0)
    try:
        yield f"{listen}:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def _answer_http(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def _connects_from(namespace: str, address: str) -> bool:
    """Whether a process on the second host connects to `address`."""
    host, _, port = address.rpartition(":")
    connect = f"import socket; socket.create_connection(({host!r}, {port}), 5).close()"
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", namespace, sys.executable, "-c", connect,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(process.wait(), 30) == 0


async def test_an_agent_host_on_another_machine_confines_its_pools(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    settings = hostile_settings(temporal, postgres, "bwrap")
    with second_host() as (namespace, here, _):
        async with forwarder(here, temporal.address) as temporal_there:
            http = await asyncio.start_server(_answer_http, here, 0)
            http_there = f"{here}:{http.sockets[0].getsockname()[1]}"
            remote = settings.model_copy(
                update={
                    "temporal": settings.temporal.model_copy(update={"address": temporal_there})
                }
            )
            _, agent_config = write_worker_configs(remote, tmp_path)
            # The second host's own network reaches Temporal and this host's server...
            for address in (temporal_there, http_there):
                assert await _connects_from(namespace, address), address
            host = WorkerProcess(
                agent_config,
                "agent",
                tmp_path / "agent.log",
                prefix=("ip", "netns", "exec", namespace),
            )
            await host.start()
            try:
                async with (
                    workers(settings, kind="kernel"),
                    await KernosClient.connect(settings) as client,
                ):
                    socket_file = f"unix:{postgres.socket_dir}/.s.PGSQL.{postgres.tcp_port or 5432}"
                    found = await probe(
                        client,
                        f"evil-{uuid.uuid4().hex[:6]}",
                        addresses=[temporal_there, http_there, socket_file, temporal.address],
                        doors=True,
                    )
                    honest = await client.submit(
                        RunSpec(
                            agent="echo", task="across", tenant=f"honest-{uuid.uuid4().hex[:6]}"
                        )
                    )
                    assert "across" in (await honest.result()).output
            finally:
                await host.stop()
                http.close()
    # ...its pools' children reach nothing: not Temporal, not this host, not the database.
    assert "connected" not in found["connect"].values(), found["connect"]
    assert found["interfaces"] == ["lo"]
    assert set(found["doors"].values()) == {"EPERM"}
    assert found["uid"] == 65534 and found["environment"] == []
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log, log[-3000:]
