"""Agent workers: they run agents' workflow code and hold no credentials."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from kernos.kernel.config import CHAT_AGENT, CHAT_AGENT_PATH, Settings
from kernos.kernel.result_seal import SealCheckInterceptor, check_key
from kernos.workflows import agent_registry
from kernos.workflows.agent_run import AgentRun
from kernos.workflows.pool_deaths import DeathRecorder
from kernos.workflows.pool_host import PoolRunner
from kernos.workflows.pool_process import CROWDED_TIMES
from kernos.workflows.pool_status import TemporalReports

log = logging.getLogger(__name__)

# kernos itself and the libraries it imports are deterministic where workflows use them; agents'
# own modules are not passed through, so they are imported, and checked, inside the sandbox.
PASSTHROUGH = (
    "kernos",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "httpx",
    "psycopg",
    "psycopg_pool",
    "casbin",
    "annotated_types",
    "typing_extensions",
    # Its Rust extension can be loaded once per process, not again inside each sandbox.
    "cryptography",
    # Agent frameworks kernos adapts (kernos.adapters): imported again in every run they would
    # cost seconds against the SDK's deadlock timeout. Shared by the runs of one pool's
    # process, as kernos itself is: their module-level state (the OpenAI Agents SDK's default
    # runner, its trace provider, httpx's transport once governed) is one per pool, never
    # across tenants' pools.
    "agents",
    "openai",
    # The HTTP stack of openai>=3 (a fork of httpx), whose transport kernos governs in a run;
    # it imports the last two on first use, and they read the platform at import.
    "httpx2",
    "httpcore2",
    "truststore",
    "langchain",
    "langchain_core",
    "langchain_openai",
    "langgraph",
    "langsmith",
    "pydantic_ai",
    "pydantic_graph",
    "genai_prices",
    "griffe",
    "logfire_api",
    "typing_inspection",
    "anyio",
    "sniffio",
    # What Pydantic AI imports at its own import (its docs' and prices' tooling).
    "rich",
    "pygments",
    "click",
    "h11",
    "idna",
    "zstandard",
    "opentelemetry",
)


#: Passed-through packages that load parts of themselves lazily, an import the sandbox does not
#: see. LangChain's `__init__`s hand out their parts by `__getattr__` and `importlib`: made
#: inside a run, that would give the run its own copy of a class (a `SystemMessage` that
#: LangChain's own `isinstance` refuses). anyio loads its asyncio backend on first use (Pydantic
#: AI's tool calls), which defines a `Thread` subclass the sandbox refuses inside a run.
LAZY_PACKAGES = (
    "langchain_core.messages", "langchain_core.outputs", "langchain_core.tools",
    "langchain_core.language_models", "langchain_core.runnables", "langchain_core.callbacks",
    "langchain_core.prompts", "langchain_core.output_parsers", "langchain_core.documents",
    "langchain_core.tracers", "langchain_core.utils", "langchain_core.load",
    "anyio._backends._asyncio",
)  # fmt: skip


def load_lazy_packages() -> None:
    """Prepare this process for runs of framework agents, before any run imports them.

    Each installed `LAZY_PACKAGES` is loaded whole, and the OpenAI client's reading of the
    platform is done.
    """
    for name in LAZY_PACKAGES:
        if importlib.util.find_spec(name.partition(".")[0]) is None:
            continue
        package = importlib.import_module(name)
        for attribute in getattr(package, "__all__", ()):
            getattr(package, attribute, None)
    if importlib.util.find_spec("openai") is not None:
        # The OpenAI client's platform headers, read once per process (cached): reading them
        # runs `uname -p`, which the sandbox refuses inside a run, and refused, the client
        # would try again at each request.
        openai = importlib.import_module("openai")
        openai.AsyncOpenAI(api_key="unused", base_url="http://unused.invalid").platform_headers()


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox with kernos's modules passed through."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def agent_worker(
    client: Client, settings: Settings, *, agents: dict[str, str] | None = None
) -> tuple[Worker, PoolRunner | None]:
    """A worker for `AgentRun`, and the pools it runs agents' code in (None: in this process).

    With `[temporal] result_check_key` (or a signing key to derive it from), its runs take only
    results that kernel workers signed.
    """
    if agents is not None:
        # kernos's own agent too, as `Settings` registers it (model_copy does not validate).
        own = {CHAT_AGENT: CHAT_AGENT_PATH}
        settings = settings.model_copy(update={"agents": {**agents, **own}})
    key = settings.temporal.check_key_hex()
    if key is None:
        log.warning(
            "agent worker: no [temporal] result_check_key, so syscall results are not checked: "
            "a poller of a kernel queue other than the kernel's could answer this worker's runs"
        )
    pools: PoolRunner | None = None
    runner: WorkflowRunner
    if settings.isolation.mode == "in_process":
        log.warning(
            "[isolation] mode = 'in_process': AGENT CODE RUNS IN THIS WORKER'S OWN PROCESS, "
            "with everything it can reach; use it only for benchmarks and debugging"
        )
        load_lazy_packages()
        agent_registry.register(settings.agents)
        runner = sandbox_runner()
    else:
        # Started (`PoolRunner.start`) by the caller, off its event loop.
        pools = PoolRunner(settings)
        pools.recorder = DeathRecorder(client, asyncio.get_running_loop())
        if settings.isolation.reports_workflow_id:
            pools.reports = TemporalReports(
                client,
                asyncio.get_running_loop(),
                settings.isolation.reports_workflow_id,
                settings.temporal.kernel_task_queue,
            )
        runner = pools
    worker = Worker(
        client,
        task_queue=settings.temporal.agent_task_queue,
        workflows=[AgentRun],
        interceptors=[SealCheckInterceptor(check_key(key))] if key and pools is None else [],
        workflow_runner=runner,
        max_cached_workflows=settings.temporal.max_cached_workflows,
        max_concurrent_workflow_tasks=settings.isolation.task_slots,
        max_concurrent_workflow_task_polls=settings.isolation.task_polls(),
        # A dead worker's runs move to another within seconds, not the default ten.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=3),
    )
    # Pools: the host's own check comes first and names what happened, at the most it lets an
    # activation take on a crowded host. (Not after a child's start as well: the SDK waits as
    # long for an eviction while it shuts down.)
    timeout = settings.isolation.activation_timeout_s
    _activations_may_take(
        worker, CROWDED_TIMES * timeout + _AFTER_THE_HOST_S if pools is not None else timeout
    )
    return worker, pools


def _activations_may_take(worker: Worker, seconds: float) -> None:
    """Let one activation take `seconds` (`[isolation] activation_timeout_s`), not the SDK's 2 s.

    The SDK fails a workflow task whose activation takes over 2 s as a deadlock, and Temporal
    gives a task that failed more than once again only after its timeout, with backoff up to
    10 minutes. A task that waits for a pool's child to start, for a cold import of an agent's
    modules in the sandbox, or for a CPU on a crowded host, is not a deadlock. A pool's host
    ends a child that does not answer in time itself; in process, the SDK's check is the only
    one, now at the setting's time. (The SDK has no setting for this: the attribute is its
    own, and its absence is said.)
    """
    inner = getattr(worker, "_workflow_worker", None)
    if inner is None or not hasattr(inner, "_deadlock_timeout_seconds"):
        log.warning(
            "agent worker: this Temporal SDK's deadlock check could not be set from "
            "[isolation] activation_timeout_s: tasks over 2 s (a pool starting on a busy host) "
            "fail and are retried later"
        )
        return
    inner._deadlock_timeout_seconds = seconds


#: The SDK's check comes this long after a pool host's own: past its last look at an
#: activation (`pool_process._LOOK_EVERY_S`, `pool_limits._FRESH_S`) and the end of its process.
_AFTER_THE_HOST_S = 10.0
