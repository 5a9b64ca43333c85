"""Kernel workers: the syscall activities, holding the credentials agent workers never see."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from temporalio.activity import _Definition
from temporalio.client import Client
from temporalio.service import ServiceClient
from temporalio.worker import FixedSizeSlotSupplier, Worker, WorkerTuner

from kernos.activities import approval_asks
from kernos.activities.context import ContextWindow, ConversationActivities
from kernos.activities.interceptor import SyscallInterceptor
from kernos.activities.llm import LLMActivities
from kernos.activities.memory import MemoryActivities
from kernos.activities.request_decoding import KERNEL_CONVERTER
from kernos.activities.runs import RunActivities
from kernos.activities.slots import HealthCheck, InstanceSlots
from kernos.activities.storage import StorageActivities
from kernos.activities.tools import ToolActivities
from kernos.kernel.audit_anchor import Anchorer
from kernos.kernel.claims import Served
from kernos.kernel.config import LLMInstance, Settings
from kernos.kernel.conversations import ConversationStore
from kernos.kernel.db.pool import dsn
from kernos.kernel.embeddings import Embedder, build_embedder
from kernos.kernel.errors import ConfigError
from kernos.kernel.file_store import StorageStore
from kernos.kernel.generations import GenerationStore
from kernos.kernel.llm.backends import build_backend
from kernos.kernel.llm.base import LLMBackend
from kernos.kernel.llm.probe import probe
from kernos.kernel.managers import Kernel
from kernos.kernel.memory_store import MemoryStore
from kernos.kernel.policy_store import watch
from kernos.kernel.run_ends import RunEnds
from kernos.kernel.run_events import RunEventLog
from kernos.kernel.scheduler import affinity_task_queue, llm_task_queue
from kernos.kernel.syscall_table import Queue, on_queue
from kernos.kernel.tools import load_tools
from kernos.kernel.tools.ledger import ToolCallStore
from kernos.kernel.tools.mcp_servers import MCPServers
from kernos.workflows.agent_worker import sandbox_runner
from kernos.workflows.audit_anchor_workflow import AuditAnchor
from kernos.workflows.host_reports_workflow import HostReports


async def _own_connection(client: Client) -> Client:
    """The same client on a connection of its own.

    Temporal's core refuses two workers of one task queue on one connection, and instances of
    one model pull from one pool queue: each instance's worker gets its own connection.
    """
    config = client.config()
    config["service_client"] = await ServiceClient.connect(client.service_client.config)
    return Client(**config)


def _reading_requests(client: Client) -> Client:
    """`client` on its connection, with the kernel workers' converter (`request_decoding`)."""
    config = client.config()
    config["data_converter"] = KERNEL_CONVERTER
    return Client(**config)


def registered(queue: Queue, activities: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
    """`activities`, checked to be exactly the syscalls the table puts on `queue`."""
    names = sorted(_Definition.must_from_callable(fn).name or "" for fn in activities)
    if names != on_queue(queue):
        raise ConfigError(
            f"a {queue} worker would register {names}; the syscall table says {on_queue(queue)}"
        )
    return activities


def _health_check(instance: LLMInstance) -> HealthCheck | None:
    """How an instance marked down is found up again: its own health endpoints."""
    if instance.base_url is None:
        return None

    async def healthy() -> bool:
        return (await probe(instance, timeout_s=2.0)).healthy

    return healthy


class KernelWorkers:
    """The kernel queue's worker plus one worker per LLM instance on its model's pool queue."""

    def __init__(
        self,
        kernel: Kernel,
        workers: list[Worker],
        backends: list[LLMBackend],
        slots: list[InstanceSlots],
        embedder: Embedder,
        mcp: MCPServers | None = None,
    ) -> None:
        self.kernel = kernel
        self._mcp = mcp
        self.workers = workers
        self._backends = backends
        self._slots = slots
        self._embedder = embedder
        self.anchorer = Anchorer(kernel.pool, kernel.client, kernel.settings)
        self.run_ends = RunEnds(kernel.pool, kernel.client, kernel.settings)
        self._stop = asyncio.Event()

    @classmethod
    async def create(
        cls,
        client: Client,
        settings: Settings,
        *,
        backends: Mapping[str, LLMBackend] | None = None,
        embedder: Embedder | None = None,
    ) -> KernelWorkers:
        """Open the kernel and build its workers.

        `backends` overrides instances by name, `embedder` the configured embedding model.
        """
        tools = load_tools(settings.tools.registry)  # a bad tool path fails before the pool
        client = _reading_requests(client)
        kernel = await Kernel.open(settings, client)
        conversations = ConversationStore(kernel.pool)
        storage = StorageStore(kernel.pool, settings.storage)
        embedder = embedder or build_embedder(settings.memory)
        memory = MemoryActivities(
            MemoryStore(kernel.pool, settings.memory), embedder, settings.memory
        )
        kernel_queue = settings.temporal.kernel_task_queue
        workers = [
            Worker(
                client,
                task_queue=kernel_queue,
                activities=registered(
                    "kernel",
                    [
                        RunActivities(kernel).finish,
                        approval_asks.ask,
                        ConversationActivities(conversations).open,
                        *memory.all(),
                        *StorageActivities(storage, embedder, settings.memory.batch_size).all(),
                    ],
                ),
                interceptors=[
                    SyscallInterceptor(kernel, Served("kernel", frozenset([kernel_queue])))
                ],
                # The audit anchor and the hosts' reports are kernel code: they run here,
                # never in an agent worker.
                workflows=[AuditAnchor, HostReports],
                workflow_runner=sandbox_runner(),
            )
        ]
        # Each tool on its own queue, at most its `concurrency` at once: a slow tool holds its
        # own slots only, never another tool's or the kernel's.
        calls = ToolActivities(ToolCallStore(kernel.pool), settings, storage)
        for tool in tools.values():
            queue = f"{settings.tools.queue_prefix}{tool.name}"
            served = Served("tool", frozenset([queue]), tools=frozenset([tool.name]))
            workers.append(
                Worker(
                    client,
                    task_queue=queue,
                    activities=registered("tool", [calls.activity_for(tool)]),
                    interceptors=[SyscallInterceptor(kernel, served)],
                    max_concurrent_activities=tool.concurrency,
                    max_concurrent_activity_task_polls=min(tool.concurrency, 2),
                )
            )
        # Each MCP server's tools on one queue, served by this worker's one session with it.
        mcp = await MCPServers.open(settings.tools.mcp) if settings.tools.mcp else None
        for server, config in settings.tools.mcp.items():
            assert mcp is not None
            offered = {n: t for n, t in mcp.tools.items() if t.server == server}
            queue = f"{settings.tools.queue_prefix}{server}"
            served = Served("tool", frozenset([queue]), tools=frozenset(offered), mcp_server=server)
            workers.append(
                Worker(
                    client,
                    task_queue=queue,
                    activities=registered("tool", [calls.activity_for_server(server, offered)]),
                    interceptors=[SyscallInterceptor(kernel, served)],
                    max_concurrent_activities=config.concurrency,
                    max_concurrent_activity_task_polls=min(config.concurrency, 2),
                )
            )
        specs = {name: tool.spec() for name, tool in tools.items()}
        if mcp is not None:
            specs |= {name: tool.spec() for name, tool in mcp.tools.items()}
        built: list[LLMBackend] = []
        gates: list[InstanceSlots] = []
        for instance in settings.llm:
            backend = (backends or {}).get(instance.name) or build_backend(instance)
            built.append(backend)
            # The instance's workers (its pool queue's and, with cache affinity, its own
            # queue's) take from one set of slots, closed while its server is unreachable.
            pool = llm_task_queue(settings.temporal.llm_queue_prefix, instance.model)
            own = (
                affinity_task_queue(
                    settings.temporal.llm_queue_prefix, instance.model, instance.name
                )
                if settings.scheduler.affinity_s
                else None
            )
            slots = InstanceSlots(
                instance.slots + settings.queued(instance),
                _health_check(instance),
                affinity_queue=own,
            )
            gates.append(slots)
            llm = LLMActivities(
                backend,
                GenerationStore(kernel.pool),
                settings.scheduler,
                ContextWindow(backend, conversations, settings.context, instance.context_window),
                provider=instance.kind,
                instance=instance.name,
                tools=specs,
                native_tools=instance.tool_calling == "native",
                on_unreachable=slots.mark_down,
                events=RunEventLog(kernel.pool),
                token_interval_s=settings.events.token_interval_s,
            )
            tuner = WorkerTuner.create_composite(
                workflow_supplier=FixedSizeSlotSupplier(1),
                activity_supplier=slots,
                local_activity_supplier=FixedSizeSlotSupplier(1),
                nexus_supplier=FixedSizeSlotSupplier(1),
            )
            connection = await _own_connection(client)
            queues = [pool] if own is None else [pool, own]
            served = Served(
                "llm",
                frozenset(queues),
                model=instance.model,
                affinity_queue=own,
                instance=instance.name,
            )
            for queue in queues:
                workers.append(
                    Worker(
                        connection,
                        task_queue=queue,
                        activities=registered("llm", [llm.chat, llm.continue_, llm.compact]),
                        interceptors=[SyscallInterceptor(kernel, served)],
                        identity=f"{client.identity}/{instance.name}",
                        tuner=tuner,
                        # Temporal's default of 5 pollers, fewer for a small instance; one on
                        # the affinity queue, whose idle poller holds no slot (InstanceSlots).
                        max_concurrent_activity_task_polls=min(instance.slots, 5)
                        if queue == pool
                        else 1,
                    )
                )
        return cls(kernel, workers, built, gates, embedder, mcp)

    async def run(self) -> None:
        """Poll (anchor the audit chains, follow policy changes) until shut down."""
        tasks = [
            *(worker.run() for worker in self.workers),
            self.anchorer.run(),
            self.run_ends.run(),
        ]
        if self.kernel.policy_store is not None:
            tasks.append(
                watch(dsn(self.kernel.settings.database), self.kernel.access.reload, self._stop)
            )
        await asyncio.gather(*tasks)

    async def shutdown(self) -> None:
        """Stop polling, finish in-flight work, release connections."""
        self.anchorer.stop()
        self.run_ends.stop()
        self._stop.set()
        await asyncio.gather(*(worker.shutdown() for worker in self.workers))
        for slots in self._slots:
            await slots.aclose()
        for backend in self._backends:
            await backend.aclose()
        await self._embedder.aclose()
        if self._mcp is not None:
            await self._mcp.aclose()
        await self.kernel.close()
