"""The services a kernel benchmark runs on: Temporal's dev server, PostgreSQL, the workers."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kernos import KernosClient
from kernos.client import connect_temporal
from kernos.infra.ports import free_port
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import Settings, load_settings
from kernos.kernel.db import upgrade
from kernos.kernel.result_seal import new_signing_key
from kernos.worker import RunningWorkers, WorkerGroup

AGENTS = {
    "one-chat": "bench_workloads:OneChatAgent",
    "sized": "bench_workloads:SizedChatAgent",
    "react": "bench_workloads:ReActShapedAgent",
    "calls": "bench_workloads:CallsAgent",
    "cost": "bench_workloads:CostAgent",
}


class Services:
    """Temporal and PostgreSQL, started for one benchmark."""

    def __init__(self, temporal: TemporalDevServer, postgres: EmbeddedPostgres) -> None:
        #: Started with a metrics port: its counters are `temporal.counters()`.
        self.temporal = temporal
        self.postgres = postgres

    def settings(self, **overrides: Any) -> Settings:
        """Kernel settings on these services, with task queues no other configuration uses."""
        unique = uuid.uuid4().hex[:8]
        values: dict[str, Any] = {
            "temporal": {
                "address": self.temporal.address,
                "agent_task_queue": f"agents-{unique}",
                "kernel_task_queue": f"kernel-{unique}",
                "llm_queue_prefix": f"llm-{unique}.",
                "result_signing_key": new_signing_key(),
            },
            "database": {"dsn": self.postgres.dsn(), "pool_max": 16},
            "agents": AGENTS,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return load_settings(**values)


@asynccontextmanager
async def services() -> AsyncIterator[Services]:
    """Start the dev server and an embedded PostgreSQL; stop them after."""
    postgres = EmbeddedPostgres.start(Path(tempfile.mkdtemp()) / "data")
    temporal = await TemporalDevServer.start(headless=True, metrics_port=free_port())
    try:
        await upgrade(postgres.dsn(role="owner"))
        yield Services(temporal, postgres)
    finally:
        temporal.stop()
        postgres.stop(delete=True)


@asynccontextmanager
async def kernel(settings: Settings) -> AsyncIterator[KernosClient]:
    """Agent and kernel workers in this process, and a client, for the block."""
    group = await WorkerGroup.create(await connect_temporal(settings), settings)
    async with RunningWorkers(group), await KernosClient.connect(settings) as client:
        yield client


def cpu_seconds() -> dict[str, float]:
    """CPU time (user and system) each part of the stack has used so far, from /proc.

    The parts: the Temporal server, PostgreSQL, this process (the client, the workers, the
    pools' host and the fake model server, in-process on both sides) and its children (the
    pools' confined processes, where agent code runs).
    """
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    parents: dict[int, int] = {}
    used: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        # utime, stime, and those of its children that ended (PostgreSQL's backends), so
        # that a process gone before the second look still counts.
        used[int(entry.name)] = (command, sum(int(field) for field in fields[11:15]) / tick)

    def part(pid: int, command: str) -> str | None:
        if pid == me:
            return "this process"
        if "temporal" in command.split(" ")[0]:
            return "temporal server"
        if "postgres" in command:
            return "postgresql"
        while pid in parents and pid > 1:
            pid = parents[pid]
            if pid == me:
                return "pool children"
        return None

    parts: dict[str, float] = defaultdict(float)
    for pid, (command, seconds) in used.items():
        found = part(pid, command)
        if found is not None:
            parts[found] += seconds
    return dict(parts)
