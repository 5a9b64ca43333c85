"""Attack 4, other servers: confined agent code has no network and no sockets to reach.

The probe tries PostgreSQL (its socket file and TCP), Temporal, and an HTTP server standing
in for an LLM server or the gateway, all on this machine; and kills every process it sees.
Unconfined it connects to each; confined it has only a loopback interface of its own, and
the processes it can see are its own: the worker and the next run are untouched. It also
knocks on the Linux kernel's riskier doors (netlink, another process's memory, the keyring,
io_uring, personas, user namespaces): open unconfined, shut by the seccomp filter confined.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kernos import KernosClient, RunSpec
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from tests.conftest import workers
from tests.hostile import Mode, hostile_settings, probe


async def _serve_http() -> tuple[asyncio.Server, str]:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("mode", ["bwrap", "in_process"])
async def test_servers_on_this_machine_are_out_of_reach_only_confined(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: Mode
) -> None:
    settings = hostile_settings(temporal, postgres, mode)
    server, http = await _serve_http()
    socket_file = f"unix:{postgres.socket_dir}/.s.PGSQL.{postgres.tcp_port or 5432}"
    addresses = [socket_file, temporal.address, http]
    try:
        async with workers(settings), await KernosClient.connect(settings) as client:
            found = await probe(
                client, f"evil-{uuid.uuid4().hex[:6]}", addresses=addresses, doors=True
            )
    finally:
        server.close()
    if mode == "in_process":
        assert set(found["connect"].values()) == {"connected"}
        assert found["doors"]["netlink_socket"] == found["doors"]["process_vm_readv"] == "open"
    else:
        assert "connected" not in found["connect"].values(), found["connect"]
        assert found["interfaces"] == ["lo"]
        assert set(found["doors"].values()) == {"EPERM"}, found["doors"]


async def test_killing_every_visible_process_hurts_only_the_pool(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = hostile_settings(temporal, postgres, "bwrap")
    async with workers(settings), await KernosClient.connect(settings) as client:
        found = await probe(client, f"evil-{uuid.uuid4().hex[:6]}", kill=True)
        # Whatever it killed lived in its own PID namespace; the host serves the next run.
        assert len(found["killed"]) <= 1
        honest = await client.submit(
            RunSpec(agent="echo", task="still here", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        assert "still here" in (await honest.result()).output
