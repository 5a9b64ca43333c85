"""Running workers: agent workers, kernel workers, or both in one process for development."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Mapping
from typing import Literal

from temporalio.client import Client
from temporalio.worker import Worker

from kernos.activities.kernel_worker import KernelWorkers
from kernos.kernel.config import ProcessKind, Settings
from kernos.kernel.embeddings import Embedder
from kernos.kernel.errors import KernosWarning
from kernos.kernel.llm.base import LLMBackend
from kernos.workflows.agent_worker import agent_worker
from kernos.workflows.pool_host import PoolRunner

WorkerKind = Literal["agent", "kernel", "all"]


def process_of(kind: WorkerKind) -> ProcessKind:
    """Whose Temporal credentials workers of `kind` connect with: `all` runs the kernel's work."""
    return "agent_worker" if kind == "agent" else "kernel_worker"


class WorkerGroup:
    """The workers of one process, started and stopped together."""

    def __init__(
        self,
        agent: Worker | None,
        kernel: KernelWorkers | None,
        pools: PoolRunner | None = None,
    ) -> None:
        self.agent = agent
        self.kernel = kernel
        #: The confined processes the agent worker runs agents' code in.
        self.pools = pools

    @classmethod
    async def create(
        cls,
        client: Client,
        settings: Settings,
        kind: WorkerKind = "all",
        *,
        backends: Mapping[str, LLMBackend] | None = None,
        agents: dict[str, str] | None = None,
        embedder: Embedder | None = None,
    ) -> WorkerGroup:
        """Build the workers of `kind`; a bad policy fails here, before polling.

        So does a bad agent path where agent code runs in process. In pools, a broken agent
        module is named in the log and fails only its own runs (`agent_check`).
        """
        if kind == "agent" and settings.database.dsn is not None:
            warnings.warn(
                "this agent worker was given a database DSN it does not need: agent code is "
                "untrusted, so give agent workers a configuration without [database] dsn",
                KernosWarning,
                stacklevel=2,
            )
        agent, pools = None, None
        if kind in ("agent", "all"):
            agent, pools = agent_worker(client, settings, agents=agents)
            if pools is not None:
                # A run's first activation must not wait for a child to start: the spare is
                # ready before the worker polls.
                try:
                    await asyncio.to_thread(pools.start)
                except BaseException:
                    pools.close()
                    raise
        kernel = None
        if kind in ("kernel", "all"):
            kernel = await KernelWorkers.create(
                client, settings, backends=backends, embedder=embedder
            )
        return cls(agent, kernel, pools)

    async def run(self) -> None:
        """Poll until shut down."""
        tasks = []
        if self.agent is not None:
            tasks.append(self.agent.run())
        if self.kernel is not None:
            tasks.append(self.kernel.run())
        await asyncio.gather(*tasks)

    async def shutdown(self) -> None:
        """Stop every worker of the group."""
        if self.pools is not None:
            self.pools.drain()
        if self.agent is not None:
            await self.agent.shutdown()
        if self.pools is not None:
            self.pools.close()
        if self.kernel is not None:
            await self.kernel.shutdown()


class RunningWorkers:
    """`async with RunningWorkers(...)`: workers polling in the background of this process."""

    def __init__(self, group: WorkerGroup) -> None:
        self.group = group
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WorkerGroup:
        self._task = asyncio.create_task(self.group.run())
        return self.group

    async def __aexit__(self, *exc_info: object) -> None:
        await self.group.shutdown()
        if self._task is not None:
            await self._task
