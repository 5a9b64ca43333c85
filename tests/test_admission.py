"""Bad input: a clear error, nothing started, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from kernos import (
    InvalidRunSpec,
    KernosClient,
    PayloadTooLarge,
    PolicyError,
    RunNotFound,
    Settings,
    UnknownAgent,
    UnknownModel,
)
from kernos.client import connect_temporal
from kernos.infra.postgres import EmbeddedPostgres
from kernos.kernel.config import CHAT_AGENT
from kernos.worker import WorkerGroup
from tests.agents import AGENTS


async def counts(client: KernosClient) -> tuple[int, int]:
    async with client.pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) AS n FROM runs")
        row = await cursor.fetchone()
    assert row is not None
    workflows = await client.temporal.count_workflows("WorkflowType='AgentRun'")
    return int(row["n"]), workflows.count


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        (
            {"agent": "nobody", "task": "t"},
            UnknownAgent,
            # The test agents, and kernos's own (the gateway's OpenAI-compatible endpoint).
            "unknown agent 'nobody'; registered agents: "
            + ", ".join(sorted([*AGENTS, CHAT_AGENT])),
        ),
        ({"agent": "echo", "task": "  "}, InvalidRunSpec, "task: task is empty"),
        ({"agent": "echo", "task": "a\x00b"}, InvalidRunSpec, "task contains a NUL character"),
        ({"agent": "echo", "task": "t", "priority": 7}, InvalidRunSpec, "priority: Input should"),
        ({"agent": "echo", "task": "t", "priority": "x"}, InvalidRunSpec, "priority: Input should"),
        ({"agent": "echo", "task": "t", "tenant": "a/b"}, InvalidRunSpec, "tenant 'a/b' is not"),
        ({"agent": "echo", "task": "t", "user": "a\x01"}, InvalidRunSpec, "is not a valid name"),
        (
            {"agent": "echo", "task": "t", "model": "gpt-9"},
            UnknownModel,
            "unknown model 'gpt-9'; configured models: scripted",
        ),
        (
            {"agent": "echo", "task": "x" * 300_000},
            PayloadTooLarge,
            "the task is 300000 bytes, over the limit of 262144 bytes (max_task_bytes)",
        ),
    ],
)
async def test_bad_spec_starts_nothing(
    kernos_client: KernosClient, spec: dict[str, object], error: type[Exception], message: str
) -> None:
    before = await counts(kernos_client)
    with pytest.raises(error) as caught:
        await kernos_client.submit(spec)
    assert message in str(caught.value)
    assert await counts(kernos_client) == before


async def test_show_unknown_run(kernos_client: KernosClient) -> None:
    with pytest.raises(RunNotFound, match="no run with id 'run-nope'"):
        await kernos_client.show("run-nope")


async def test_malformed_policy_stops_the_kernel_worker(settings: Settings, tmp_path: Path) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text("p, *, *, *, llm:*, llm.chat, allow\np, oops\n")
    bad = settings.model_copy(
        update={"policy": settings.policy.model_copy(update={"policy_path": policy})}
    )
    client: Client = await connect_temporal(bad)
    with pytest.raises(PolicyError, match=r"policy.csv:2: a 'p' rule has 6 fields"):
        await WorkerGroup.create(client, bad, "kernel")


async def test_postgres_requires_the_password(postgres: EmbeddedPostgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        await psycopg.AsyncConnection.connect(postgres.trust_dsn())
    wrong = postgres.dsn().replace(postgres.credentials.kernel_password, "guess")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await psycopg.AsyncConnection.connect(wrong)
    async with await psycopg.AsyncConnection.connect(postgres.dsn()) as conn:
        cursor = await conn.execute("SELECT current_user")
        assert await cursor.fetchone() == ("kernos",)


async def test_audit_log_is_append_only(
    kernos_client: KernosClient, postgres: EmbeddedPostgres
) -> None:
    # The kernel's role may not touch it (tests/test_db_roles.py has the rest)...
    async with kernos_client.pool.connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("DELETE FROM audit")
    # ...and its trigger holds against the owner too, short of switching it off.
    async with await psycopg.AsyncConnection.connect(postgres.dsn(role="owner")) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            await conn.execute("DELETE FROM audit")
        await conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            await conn.execute("UPDATE audit SET decision = 'allow'")
