"""The core path: an agent's LLM syscalls through the kernel, audited, accounted, visible."""

from __future__ import annotations

from kernos import KernosClient, RunSpec, ScriptedBackend, Settings
from kernos.kernel import visibility
from tests.conftest import workers
from tests.waiting import eventually


async def audit_rows(client: KernosClient, run_id: str) -> list[dict[str, object]]:
    async with client.pool.connection() as conn:
        cursor = await conn.execute("SELECT * FROM audit WHERE run_id = %s ORDER BY id", (run_id,))
        return list(await cursor.fetchall())


async def test_example_agent_runs_two_syscalls(
    settings: Settings, kernos_client: KernosClient
) -> None:
    backend = ScriptedBackend(["1. think 2. check 3. answer", "four"])
    async with workers(settings, backends={"scripted": backend}):
        handle = await kernos_client.submit(
            RunSpec(agent="planner", task="What is 2+2?", tenant="acme", user="alice")
        )
        result = await handle.result()

    assert result.output == "four"
    assert result.syscalls == 2
    assert backend.calls == 2
    # The answer call carries the plan the first call produced.
    assert "1. think 2. check 3. answer" in backend.requests[1].messages[2].content
    assert result.usage.output_tokens == 6 + 1

    view = await kernos_client.show(handle.run_id)
    assert view.status == "completed"
    assert view.record.output == "four"
    assert view.record.output_tokens == result.usage.output_tokens
    assert [(c.syscall, c.decision, c.outcome) for c in view.syscalls] == [
        ("llm.chat", "allow", "ok"),
        ("llm.chat", "allow", "ok"),
        ("run.end", "allow", None),
    ]
    rows = await audit_rows(kernos_client, handle.run_id)
    calls, [end] = rows[:-1], rows[-1:]
    assert len(calls) == 2
    assert {(r["tenant"], r["user_name"], r["agent"], r["resource"]) for r in calls} == {
        ("acme", "alice", "planner", "llm:scripted")
    }
    assert all(r["rule"] == "*, *, *, llm:*, llm.*, allow" for r in calls)
    # Its end, as Temporal has it, in the same chain under the same identity.
    assert (end["syscall"], end["tenant"], end["user_name"], end["reason"]) == (
        "run.end",
        "acme",
        "alice",
        "completed",
    )


async def test_search_attributes_follow_the_run(
    settings: Settings, kernos_client: KernosClient
) -> None:
    async with workers(settings):
        handle = await kernos_client.submit(
            RunSpec(agent="echo", task="hello", tenant="tenant-sa", user="bob")
        )
        await handle.result()
    description = await kernos_client.temporal.get_workflow_handle(handle.run_id).describe()
    attributes = description.typed_search_attributes
    assert attributes.get(visibility.AGENT) == "echo"
    assert attributes.get(visibility.TENANT) == "tenant-sa"
    assert attributes.get(visibility.STATUS) == "completed"

    # What an operator types: `temporal workflow list --query "KernosTenant='tenant-sa'"`.
    query = "KernosTenant='tenant-sa' AND KernosAgent='echo' AND KernosStatus='completed'"

    async def found() -> list[str]:
        return [wf.id async for wf in kernos_client.temporal.list_workflows(query)]

    # Visibility is eventually consistent.
    await eventually(
        found, lambda ids: handle.run_id in ids, what="the run in the query", every_s=0.2
    )


async def test_agent_bug_fails_the_run_with_its_error(
    settings: Settings, kernos_client: KernosClient
) -> None:
    from kernos import RunFailed

    async with workers(settings):
        handle = await kernos_client.submit(RunSpec(agent="buggy", task="x"))
        try:
            await handle.result()
        except RunFailed as exc:
            assert exc.error_type == "ZeroDivisionError"
            assert "divided by zero" in str(exc)
        else:
            raise AssertionError("the run should have failed")
    record = await kernos_client.runs.get(handle.run_id)
    assert record.status == "failed"
    assert record.error == "ZeroDivisionError: the agent divided by zero"
