"""Identity comes from the kernel's record of the run, not from what agent code sends."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import WorkflowFailureError

from kernos import KernosClient, RunFailed, RunSpec, RunView, Settings
from kernos.kernel.identity import IdentityResolver
from kernos.kernel.run_store import RunStore
from kernos.kernel.syscalls import RunInput, RunOutcome, Scheduling
from tests.conftest import workers


async def test_unadmitted_workflow_is_denied_and_audited(
    settings: Settings, kernos_client: KernosClient
) -> None:
    # Agent code (or anyone with Temporal access) starts AgentRun without the kernel's admission.
    spec = RunSpec(agent="echo", task="hi", tenant="acme", user="root", model="scripted")
    async with workers(settings):
        handle = await kernos_client.temporal.start_workflow(
            "AgentRun",
            RunInput(
                run_id="run-forged",
                spec=spec,
                kernel_task_queue=settings.temporal.kernel_task_queue,
                llm_queue_prefix=settings.temporal.llm_queue_prefix,
            ),
            id=f"forged-{settings.temporal.agent_task_queue}",
            task_queue=settings.temporal.agent_task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "is not a run the kernel admitted" in str(failed.value.cause)
    async with kernos_client.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT run_id, tenant, decision, reason FROM audit WHERE workflow_id = %s",
            (handle.id,),
        )
        rows = await cursor.fetchall()
    assert len(rows) == 1
    assert rows[0]["run_id"] is None  # the forged tenant and user were never believed
    assert rows[0]["tenant"] is None
    assert rows[0]["decision"] == "deny"


async def self_finished(settings: Settings, mode: str) -> tuple[RunFailed, RunView]:
    """A run that says it completed, then asks for more: how it failed, and its record."""
    agents = {**settings.agents, "self-finisher": "tests.agents:FinishesItselfAgent"}
    isolation = settings.isolation.model_copy(update={"mode": mode})
    settings = settings.model_copy(update={"agents": agents, "isolation": isolation})
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(
            RunSpec(agent="self-finisher", task=settings.temporal.kernel_task_queue)
        )
        with pytest.raises(RunFailed) as failed:
            await handle.result()
        return failed.value, await client.show(handle.run_id)


async def test_finished_run_makes_no_syscalls(settings: Settings) -> None:
    # Unconfined, the kernel records what the run said of its end (as for a run admitted
    # before runs stopped saying), and refuses what it asks after.
    failed, view = await self_finished(settings, "in_process")
    assert failed.error_type == "AccessDenied"
    assert "is completed; it makes no syscalls" in str(failed)
    # It said it completed; its record says how it really ended, from Temporal.
    assert view.record.status == "failed" and view.record.output is None
    assert (view.record.error or "").startswith("AccessDenied: ")
    assert [(c.syscall, c.decision) for c in view.syscalls] == [
        ("llm.chat", "deny"),
        ("run.end", "allow"),
    ]
    assert "(the run had said completed)" in (view.syscalls[1].reason or "")
    # The tokens it claimed in its own outcome are not the kernel's count.
    assert (view.record.input_tokens, view.record.output_tokens) == (0, 0)


async def test_a_confined_run_says_nothing_of_its_end(settings: Settings) -> None:
    # In its pool, the host refuses a run.finish from a run admitted now.
    failed, view = await self_finished(settings, "bwrap")
    assert failed.error_type == "CommandRefused"
    assert "syscall run.finish: the kernel learns how this run ends from Temporal" in str(failed)
    # Its record never said "completed": only how Temporal closed it.
    assert view.record.status == "failed" and view.record.output is None
    assert [(c.syscall, c.decision) for c in view.syscalls] == [("run.end", "allow")]
    assert "(the run had said" not in (view.syscalls[0].reason or "")


async def test_the_identity_cache_keeps_what_admission_fixed_not_the_task(
    kernos_client: KernosClient,
) -> None:
    # Up to 10,000 callers are cached: a 256 KB task each would be gigabytes.
    task = "x" * 200_000
    spec = RunSpec(agent="echo", task=task, tenant="acme", priority=2, model="scripted")
    runs = RunStore(kernos_client.pool)
    run_id = f"run-cache-{uuid.uuid4().hex[:8]}"
    await runs.admit(RunInput(run_id=run_id, spec=spec, scheduling=Scheduling(policy="fair")))
    await runs.bind(run_id, "exec-1")

    async def never(workflow_id: str, execution_run_id: str) -> str:
        raise AssertionError("the first execution is the bound one")

    caller = await IdentityResolver(runs, never).resolve(run_id, "exec-1")
    assert caller.record.spec.task == "(not kept)"
    assert (caller.record.spec.priority, caller.record.scheduling.policy) == (2, "fair")
    assert caller.subject.tenant == "acme"
    assert (await runs.get(run_id)).spec.task == task  # the record itself is whole
    await runs.finish(run_id, RunOutcome(status="completed"))
