"""Session fixtures: the real Temporal dev server and real PostgreSQL, on free ports."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from temporalio.client import Client

from kernos import KernosClient, Settings, load_settings
from kernos.client import connect_temporal
from kernos.infra.daemons import stop
from kernos.infra.llama import LlamaServer, local_model
from kernos.infra.ports import free_port
from kernos.infra.postgres import OWNER_ROLE, EmbeddedPostgres
from kernos.infra.process import exit_process
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import EmbeddedSettings
from kernos.kernel.db import upgrade
from kernos.kernel.embeddings import Embedder
from kernos.kernel.llm.base import LLMBackend
from kernos.kernel.result_seal import new_signing_key
from kernos.worker import RunningWorkers, WorkerGroup, WorkerKind, process_of
from tests.agents import AGENTS

#: Kernel workers of the tests sign syscall results with this key; agent workers check them.
RESULT_KEY = new_signing_key()

# Tests never read a developer's ./kernos.toml: settings come from the fixtures alone.
_EMPTY_CONFIG = Path(tempfile.mkdtemp(prefix="kernos-test-")) / "kernos.toml"
_EMPTY_CONFIG.write_text("")
os.environ["KERNOS_CONFIG"] = str(_EMPTY_CONFIG)
for _name in [
    name for name in os.environ if name.startswith("KERNOS_") and name != "KERNOS_CONFIG"
]:
    del os.environ[_name]
# Nor what a `kernos up` in this checkout wrote under ./.kernos.
os.environ["KERNOS_STATE_DIR"] = str(_EMPTY_CONFIG.parent / "state")


#: Fixtures that start PostgreSQL or a model server (or need one): a test using any of them,
#: directly or not, is marked `servers`, and the fast tier (`make test-fast`, `-m "not
#: servers"`) leaves it out. The Temporal dev server alone does not count: it starts in a
#: fraction of a second, and the fast tier runs workflows on it (tests/test_workflow_logic.py).
SERVER_FIXTURES = frozenset({"postgres", "llama", "stack_llama"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sglang-url",
        default=None,
        help="run the SGLang conformance tests against this server instead of the fake",
    )
    parser.addoption(
        "--record-histories",
        action="store_true",
        help="write the histories of the runs tests keep for replay into tests/histories/ "
        "(then take the new fingerprints: python -m tests.workflow_sources)",
    )


HISTORIES = Path(__file__).parent / "histories"
#: Keeps a run's histories for replay (with --record-histories): `(client, run id, name)`.
KeepHistory = Callable[[Client, str, str], Awaitable[None]]


@pytest.fixture
def keep_history(request: pytest.FixtureRequest) -> KeepHistory:
    """Where a test has taken a run through a workflow feature, its histories for replay.

    Without the option it does nothing: histories are recorded on purpose, once per feature,
    and then replayed on every test run (tests/test_replay.py).
    """
    recording = bool(request.config.getoption("--record-histories"))

    async def keep(temporal: Client, run_id: str, name: str) -> None:
        if not recording:
            return
        found = temporal.list_workflows(f'WorkflowId = "{run_id}"')
        executions = sorted([e async for e in found], key=lambda e: e.start_time)
        for number, execution in enumerate(executions, 1):
            handle = temporal.get_workflow_handle(run_id, run_id=execution.run_id)
            history = await handle.fetch_history()
            suffix = f"-{number}" if len(executions) > 1 else ""
            (HISTORIES / f"{name}{suffix}.json").write_text(history.to_json())

    return keep


@pytest.fixture(scope="session")
async def postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres.start(tmp_path_factory.mktemp("pg") / "data")
    await upgrade(server.dsn(role="owner"))
    yield server
    server.stop(delete=True)


@pytest.fixture(scope="session")
async def temporal() -> AsyncIterator[TemporalDevServer]:
    server = await TemporalDevServer.start(headless=True)
    yield server
    server.stop()


def new_database(postgres: EmbeddedPostgres) -> str:
    """A database of its own on the session's server, with pgvector, no schema yet: its name.

    Migrations run as its owner (`postgres.dsn(role="owner", database=name)`), the kernel as
    the kernel's role (`postgres.dsn(database=name)`).
    """
    name = f"db_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.dsn(role="admin"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    with psycopg.connect(postgres.dsn(role="admin", database=name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")  # a superuser's to create
    return name


def make_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, /, **overrides: Any
) -> Settings:
    """Settings on the session's servers, with task queues of this test's own.

    `temporal={...}` adds to (or replaces) the `[temporal]` settings, as for any section.
    """
    unique = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "temporal": {
            "address": temporal.address,
            "agent_task_queue": f"agents-{unique}",
            "kernel_task_queue": f"kernel-{unique}",
            "llm_queue_prefix": f"llm-{unique}.",
            "result_signing_key": RESULT_KEY,
        },
        "database": {"dsn": postgres.dsn(), "operator_dsn": postgres.dsn(role="operator")},
        "agents": AGENTS,
        "limits": {"retry_initial_interval_s": 0.2, "retry_max_interval_s": 1.0},
        # Anchoring starts a workflow that outlives the test's worker: only its own tests do it.
        "audit": {"anchor_interval_s": 0, "anchor_workflow_id": f"anchor-{unique}"},
        "tools": {"queue_prefix": f"tools-{unique}."},
        # The hosts' reports in Temporal, likewise: a workflow the test's kernel workers run.
        "isolation": {"reports_workflow_id": ""},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_settings(operator=True, **values)


@pytest.fixture
def settings(temporal: TemporalDevServer, postgres: EmbeddedPostgres) -> Settings:
    return make_settings(temporal, postgres)


@pytest.fixture
async def temporal_client(settings: Settings) -> Client:
    return await connect_temporal(settings)


@pytest.fixture
async def kernos_client(settings: Settings) -> AsyncIterator[KernosClient]:
    client = await KernosClient.connect(settings)
    yield client
    await client.close()


@asynccontextmanager
async def workers(
    settings: Settings,
    *,
    backends: Mapping[str, LLMBackend] | None = None,
    kind: WorkerKind = "all",
    embedder: Embedder | None = None,
) -> AsyncIterator[WorkerGroup]:
    """Agent and kernel workers polling in this process for the duration of the block."""
    client = await connect_temporal(settings, process_of(kind))
    group = await WorkerGroup.create(
        client,
        settings,
        kind,
        backends=backends,
        embedder=embedder,
    )
    async with RunningWorkers(group) as running:
        yield running


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # Servers and clients are closed by the fixtures; what is left is the interpreter's
    # finalisation, where Temporal's core can abort: end with pytest's own status instead.
    if _exit_status:
        exit_process(_exit_status[-1])


MODELS = Path.home() / ".cache" / "kernos" / "models"


@pytest.fixture(scope="session")
async def llama(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LlamaServer]:
    """The real llama.cpp server with the packaged Gemma 3 270M model (CPU)."""
    model = local_model(MODELS)
    server = await LlamaServer.start(
        model,
        port=free_port(),
        slots=4,
        context=4096,
        log_file=tmp_path_factory.mktemp("llama") / "llama.log",
    )
    yield server
    stop(server.pid)


@pytest.fixture
async def stack_llama(tmp_path: Path) -> AsyncIterator[LlamaServer]:
    """llama.cpp as `kernos up` runs it (its slots and context: 2,048 tokens a slot), for the
    examples the demo runs, whose tool-calling turns outgrow the `llama` fixture's 1,024.

    A fresh server for each test: a small model's path through a multi-turn example depends
    on what the server's prompt cache already held (a cached prefix is not recomputed, and its
    numbers differ in the last bits), so a shared one made the tests depend on their order.
    """
    embedded = EmbeddedSettings()
    server = await LlamaServer.start(
        local_model(MODELS),
        port=free_port(),
        slots=embedded.llm_slots,
        context=embedded.llm_context,
        log_file=tmp_path / "stack-llama.log",
    )
    yield server
    stop(server.pid)


@pytest.fixture(scope="session", autouse=True)
async def _report_leftover_tasks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is not current:
            print("LEFTOVER", task.get_name(), task.get_coro(), file=sys.stderr)
