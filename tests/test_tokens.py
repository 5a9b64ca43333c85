"""Token accounting per run and tenant, and per-tenant budgets."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from kernos import (
    InvalidRequest,
    KernosClient,
    RunFailed,
    RunSpec,
    ScriptedBackend,
    Settings,
)
from kernos.kernel.access import Decision, Subject
from kernos.kernel.audit import AttemptKey, AuditLog
from kernos.kernel.db.pool import Pool, open_pool
from kernos.kernel.run_store import RunStore
from kernos.kernel.syscalls import RunInput, TokenUsage
from tests.conftest import workers


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def test_usage_adds_up_per_tenant(settings: Settings, kernos_client: KernosClient) -> None:
    name = tenant()
    async with workers(settings):
        results = [
            await (await kernos_client.submit(RunSpec(agent="steps", task=n, tenant=name))).result()
            for n in ("2", "3")
        ]
    [usage] = await kernos_client.usage(name)
    assert usage.syscalls == 5
    assert usage.input_tokens == sum(r.usage.input_tokens for r in results)
    assert usage.output_tokens == sum(r.usage.output_tokens for r in results)
    assert usage.max_tokens is None
    async with kernos_client.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT sum(input_tokens) AS i, sum(output_tokens) AS o FROM syscall_results"
            " WHERE tenant = %s",
            (name,),
        )
        ledger = await cursor.fetchone()
    assert ledger is not None
    assert (ledger["i"], ledger["o"]) == (usage.input_tokens, usage.output_tokens)


ALLOW = Decision(True, "p, *, *, *, llm:*, llm.*, allow")


async def decided_attempt(pool: Pool, name: str, decision: Decision = ALLOW) -> AttemptKey:
    """An attempt of a run of tenant `name`, with its decision in the audit."""
    spec = RunSpec(agent="a", task="t", tenant=name, user="u", model="m")
    await RunStore(pool).admit(RunInput(run_id=f"run-{name}", spec=spec))
    key = AttemptKey(f"wf-{name}", "exec", "1", 1)
    subject = Subject(run_id=f"run-{name}", tenant=name, user="u", agent="a")
    await AuditLog(pool).record_decision(key, subject, "llm.chat", "llm:m", decision)
    return key


async def test_a_redelivered_result_counts_once(kernos_client: KernosClient) -> None:
    name = tenant()
    key = await decided_attempt(kernos_client.pool, name)
    for _ in range(2):
        await AuditLog(kernos_client.pool).record_result(
            key, "llm.chat", error_type=None,
            usage=TokenUsage(input_tokens=5, output_tokens=7), duration_ms=1.0,
        )  # fmt: skip
    [usage] = await kernos_client.usage(name)
    assert (usage.input_tokens, usage.output_tokens, usage.syscalls) == (5, 7, 1)


async def test_a_result_is_recorded_only_for_an_allowed_attempt(
    kernos_client: KernosClient,
) -> None:
    """With the kernel's credentials alone, no tokens are added to a tenant's usage but by a
    syscall the audit allowed (and none taken away)."""
    denied, allowed = tenant(), tenant()
    audit = AuditLog(kernos_client.pool)
    refused = await decided_attempt(kernos_client.pool, denied, Decision(False, None, "no"))
    allowed_key = await decided_attempt(kernos_client.pool, allowed)
    attempts = [
        (AttemptKey("wf-nobody", "exec", "1", 1), "llm.chat", 5, "no allowed llm.chat decision"),
        (refused, "llm.chat", 5, "no allowed llm.chat decision"),
        (allowed_key, "tool.call", 5, "no allowed tool.call decision"),
        (allowed_key, "llm.chat", -1000, "cannot return tokens"),
    ]
    for key, syscall, tokens, said in attempts:
        with pytest.raises(psycopg.errors.RaiseException, match=said):
            await audit.record_result(
                key, syscall, error_type=None,
                usage=TokenUsage(input_tokens=tokens, output_tokens=0), duration_ms=1.0,
            )  # fmt: skip
    assert await kernos_client.usage(denied) == []
    assert await kernos_client.usage(allowed) == []


async def test_budget_refuses_syscalls_once_spent(settings: Settings) -> None:
    name = tenant()
    backend = ScriptedBackend()
    async with (
        workers(settings, backends={"scripted": backend}),
        await KernosClient.connect(settings) as client,
    ):
        # Each step here costs 2 input + 6 output tokens: two fit under 10, a third does not.
        await client.set_budget(name, 10)
        handle = await client.submit(RunSpec(agent="steps", task="5", tenant=name))
        with pytest.raises(RunFailed) as failed:
            await handle.result()
        view = await client.show(handle.run_id)
        [usage] = await client.usage(name)
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT basis FROM audit WHERE run_id = %s ORDER BY id", (handle.run_id,)
            )
            bases = [row["basis"] for row in await cursor.fetchall()]
        # Lifting the budget lets the tenant's next run through.
        await client.set_budget(name, None)
        again = await client.submit(RunSpec(agent="steps", task="1", tenant=name))
        result = await again.result()

    assert failed.value.error_type == "TokenBudgetExceeded"
    assert f"tenant '{name}' has used 16 tokens of its budget of 10" in str(failed.value)
    assert backend.calls == 2 + 1  # the refused syscall never reached the model
    assert [(c.syscall, c.decision, c.outcome) for c in view.syscalls] == [
        ("llm.chat", "allow", "ok"),
        ("llm.chat", "allow", "ok"),
        ("llm.chat", "deny", None),
        ("run.end", "allow", None),  # failed, TokenBudgetExceeded, as Temporal has it
    ]
    assert bases == ["policy", "policy", "budget", "policy"]
    assert usage.total_tokens == 16
    assert usage.max_tokens == 10
    assert result.syscalls == 1


async def test_budget_input_is_checked(kernos_client: KernosClient) -> None:
    with pytest.raises(InvalidRequest, match="at least 1, not 0"):
        await kernos_client.set_budget("acme", 0)
    with pytest.raises(InvalidRequest, match=r"tenant '\.\./x' is not a valid name"):
        await kernos_client.set_budget("../x", 5)


async def test_a_result_commits_without_waiting_for_the_disk_and_changes_nothing_after(
    settings: Settings,
) -> None:
    """The result row's commit is asynchronous for its own transaction only: the pooled
    connection it ran on commits durably again afterwards."""
    name = tenant()
    pool = await open_pool(settings.database.model_copy(update={"pool_min": 1, "pool_max": 1}))
    try:
        await AuditLog(pool).record_result(
            await decided_attempt(pool, name),
            "llm.chat",
            error_type=None,
            usage=TokenUsage(input_tokens=3, output_tokens=4),
            duration_ms=1.0,
        )
        async with pool.connection() as conn:  # the same, only connection
            cursor = await conn.execute("SHOW synchronous_commit")
            assert await cursor.fetchone() == {"synchronous_commit": "on"}
            cursor = await conn.execute(
                "SELECT input_tokens, output_tokens FROM tenant_usage WHERE tenant = %s", (name,)
            )
            assert await cursor.fetchone() == {"input_tokens": 3, "output_tokens": 4}
    finally:
        await pool.close()
