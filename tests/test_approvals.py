"""Durable human approval: marked syscalls wait for a decision the kernel records."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from kernos import AccessDenied, KernosClient, RunSpec, Settings
from kernos.approval_decisions import decide
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel import visibility
from kernos.kernel.approvals import Approval, ApprovalStore
from tests import tools as test_tools
from tests.conftest import KeepHistory, workers
from tests.hostile import HOSTILE_AGENTS
from tests.test_cli import config_file, kernos
from tests.test_tools import tool_settings
from tests.waiting import eventually


@asynccontextmanager
async def workers_and_client(settings: Settings) -> AsyncIterator[KernosClient]:
    """Workers and a client, for the block."""
    async with workers(settings), await KernosClient.connect(settings) as client:
        yield client


def approval_settings(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path, tenant: str,
    **overrides: Any,
) -> Settings:  # fmt: skip
    return tool_settings(
        temporal, postgres, tmp_path,
        policy=(
            f"a, *, *, {tenant}, tool:charge, tool.call\n"
            f"a, *, *, {tenant}, storage:*, storage.delete\n"
            f"p, alice, *, {tenant}, *, approval.decide, allow\n"
        ),
        **overrides,
    )  # fmt: skip


async def pending_of(client: KernosClient, run_id: str, deadline_s: float = 30) -> Approval:
    found = await eventually(
        lambda: ApprovalStore(client.pool).listing(run_id=run_id),
        what=f"run {run_id} asking for approval", timeout_s=deadline_s,
    )  # fmt: skip
    return found[0]


async def status_of(client: KernosClient, run_id: str) -> str | None:
    description = await client.temporal.get_workflow_handle(run_id).describe()
    return description.typed_search_attributes.get(visibility.STATUS)


async def audited(client: KernosClient, run_id: str) -> list[tuple[str, str, str, str]]:
    async with client.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT syscall, decision, basis, user_name FROM audit WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        return [tuple(row.values()) for row in await cursor.fetchall()]


def charge(cents: int) -> dict[str, Any]:
    return {"op": "tools.call", "tool": "charge", "account": "acme", "cents": cents}


async def test_a_marked_call_waits_for_an_allowed_approver_then_runs_once(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    keep_history: KeepHistory,
) -> None:  # fmt: skip
    tenant = f"approve-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    async with workers_and_client(settings) as client:
        handle = await client.submit(
            RunSpec(agent="memo", task=json.dumps([charge(900)]), tenant=tenant)
        )
        waiting = await pending_of(client, handle.run_id)
        assert (waiting.syscall, waiting.resource, waiting.status) == (
            "tool.call", "tool:charge", "pending",
        )  # fmt: skip
        assert waiting.request["arguments"] == json.dumps({"account": "acme", "cents": 900})
        await until(lambda: status_of(client, handle.run_id), "awaiting-approval")
        assert not (test_tools.EFFECTS / tenant).exists()  # nothing happened yet

        with pytest.raises(AccessDenied, match="'mallory' may not decide approvals of tool:charge"):
            await decide(client, handle.run_id, approver="mallory", approve=True)
        # A client with mallory's API key decides as mallory, whoever it names.
        _, token = await client.create_key(user="mallory", tenant=tenant)
        async with await KernosClient.connect(settings, api_key=token) as keyed:
            with pytest.raises(AccessDenied, match=r"/mallory''s: it cannot decide as 'alice'"):
                await keyed.approve(handle.run_id, user="alice")
        decided = await client.approve(handle.run_id, user="alice", reason="ok")
        assert decided.woken and decided.approval.status == "approved"
        [result] = json.loads((await handle.result()).output)
        assert result["content"] == "charged 900 to acme"
        assert await status_of(client, handle.run_id) == "completed"
        rows = await audited(client, handle.run_id)
        used = await ApprovalStore(client.pool).get(waiting.id)
        await keep_history(client.temporal, handle.run_id, "memo-approved")

    assert len((test_tools.EFFECTS / tenant).read_text().splitlines()) == 1
    assert rows == [
        ("tool.call", "deny", "approval", "operator"),  # waiting
        ("approval.decide", "deny", "policy", "mallory"),
        ("approval.decide", "allow", "policy", "alice"),
        ("tool.call", "allow", "approval", "operator"),
        ("run.end", "allow", "policy", "operator"),  # as Temporal has it, recorded by result()
    ]
    assert used.used_by is not None and used.decided_by == "alice"


async def test_an_approved_ask_lets_no_kernel_tool_call_through(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    # A hostile agent has alice approve an `approval.ask` that reads like a charge, then
    # charges: the charge's own `a` rule still holds it for a decision of its own.
    tenant = f"launder-{uuid.uuid4().hex[:8]}"
    agents = {"launderer": HOSTILE_AGENTS["launderer"]}
    settings = approval_settings(temporal, postgres, tmp_path, tenant, agents=agents)
    arguments = json.dumps({"account": "acme", "cents": 900})
    async with workers_and_client(settings) as client:
        handle = await client.submit(RunSpec(agent="launderer", task=arguments, tenant=tenant))
        asked = await pending_of(client, handle.run_id)
        assert (asked.syscall, asked.resource) == ("approval.ask", "agent-tool:charge")
        await client.approve(handle.run_id, user="alice", reason="looks fine")
        charge_waits = await eventually(
            lambda: ApprovalStore(client.pool).listing(run_id=handle.run_id),
            what="the charge asking for an approval of its own", timeout_s=30,
        )  # fmt: skip
        assert [(a.syscall, a.resource) for a in charge_waits] == [("tool.call", "tool:charge")]
        assert not (test_tools.EFFECTS / tenant).exists()  # nothing charged
        await decide(client, handle.run_id, approver="alice", approve=False, reason="no")
        output = (await handle.result()).output
    assert output.startswith("denied: tool.call on tool:charge denied by 'alice'"), output
    assert not (test_tools.EFFECTS / tenant).exists()


async def test_a_run_may_keep_only_so_many_humans_waiting(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    # A hostile agent asks for 70 approvals at once: 64 wait (and expire, undecided), the rest
    # are refused at once, each refusal an audit row, instead of filling approvers' lists.
    tenant = f"asker-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(
        temporal, postgres, tmp_path, tenant, agents={"asker": HOSTILE_AGENTS["asker"]},
        limits={"approval_timeout_s": 10.0},
    )  # fmt: skip
    async with workers_and_client(settings) as client:
        handle = await client.submit(RunSpec(agent="asker", task="70", tenant=tenant))
        answers = json.loads((await handle.result()).output)
        history = await ApprovalStore(client.pool).listing(run_id=handle.run_id, pending_only=False)
        rows = await audited(client, handle.run_id)
    capped = [a for a in answers if "the most a run may" in a]
    assert len(capped) == 6, answers
    assert sum("expired undecided" in a for a in answers) == 64, answers
    assert len(history) == 64
    refusals = [r for r in rows if r[:3] == ("approval.ask", "deny", "approval")]
    assert len(refusals) >= 64 + 6  # each wait and each refusal


async def test_a_request_built_around_validation_is_refused_not_retried(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    # Temporal's worker fails an activity whose arguments do not decode, retryably: with a
    # syscall's unbounded retries the run would wait forever, unaudited. The kernel's decoding
    # names the problem and the interceptor refuses it, audited.
    tenant = f"forger-{uuid.uuid4().hex[:8]}"
    agents = {"forger": HOSTILE_AGENTS["forger"]}
    settings = approval_settings(temporal, postgres, tmp_path, tenant, agents=agents)
    async with workers_and_client(settings) as client:
        handle = await client.submit(RunSpec(agent="forger", task="-", tenant=tenant))
        output = (await asyncio.wait_for(handle.result(), 60)).output
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT syscall, decision, basis, reason FROM audit WHERE run_id = %s ORDER BY id",
                (handle.run_id,),
            )
            first = await cursor.fetchone()
    # Refused (the error's seal is over the request the kernel could not read, so the agent
    # sees it as unsealed: a forger learns nothing more).
    assert output.startswith("denied: "), output
    assert first is not None
    assert (first["syscall"], first["decision"], first["basis"]) == (
        "approval.ask",
        "deny",
        "claim",
    )
    assert first["reason"].startswith("the approval.ask request is invalid: call_id: ")
    assert "contains a NUL character" in first["reason"]


async def test_a_denial_or_a_timeout_refuses_and_changes_nothing(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"deny-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(
        temporal, postgres, tmp_path, tenant, limits={"approval_timeout_s": 6.0}
    )
    steps = [
        {"op": "storage.write", "path": "keep.md", "content": "precious"},
        {"op": "storage.delete", "path": "keep.md"},
        charge(5),  # nobody decides: expires after 6 s
        {"op": "storage.read", "path": "keep.md"},
    ]
    async with workers_and_client(settings) as client:
        handle = await client.submit(RunSpec(agent="memo", task=json.dumps(steps), tenant=tenant))
        await pending_of(client, handle.run_id)
        await decide(client, handle.run_id, approver="alice", approve=False, reason="keep it")
        _, deleted, charged, read = json.loads((await handle.result()).output)
        history = await ApprovalStore(client.pool).listing(run_id=handle.run_id, pending_only=False)

    assert deleted["error"] == "AccessDenied"
    assert "denied by 'alice'" in deleted["message"] and "keep it" in deleted["message"]
    assert charged["error"] == "AccessDenied"
    assert "expired undecided" in charged["message"]
    assert read["content"] == "precious"  # the file was not deleted
    assert not (test_tools.EFFECTS / tenant).exists()  # nothing was charged
    assert [(a.syscall, a.status) for a in history] == [
        ("storage.delete", "denied"),
        ("tool.call", "expired"),
    ]


async def test_a_waiting_run_survives_its_workers_and_sees_a_decision_made_meanwhile(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"restart-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(
        temporal, postgres, tmp_path, tenant, limits={"approval_timeout_s": 12.0}
    )
    async with workers_and_client(settings) as client:
        handle = await client.submit(
            RunSpec(agent="memo", task=json.dumps([charge(70)]), tenant=tenant)
        )
        await pending_of(client, handle.run_id)
    # Every worker is gone: the decision is still the kernel's to record.
    async with await KernosClient.connect(settings) as client:
        decided = await decide(
            client, handle.run_id, approver="alice", approve=True, wake_timeout_s=1.0
        )
        assert not decided.woken
    async with workers_and_client(settings) as client:
        [result] = json.loads((await client.handle(handle.run_id).result()).output)
    assert result["content"] == "charged 70 to acme"
    assert len((test_tools.EFFECTS / tenant).read_text().splitlines()) == 1


async def test_approvals_from_the_cli(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    settings = approval_settings(temporal, postgres, tmp_path, tenant)
    config = config_file(settings, tmp_path)
    async with workers_and_client(settings) as client:
        handle = await client.submit(
            RunSpec(agent="memo", task=json.dumps([charge(3)]), tenant=tenant)
        )
        waiting = await pending_of(client, handle.run_id)
        code, out, err = await kernos(config, "approvals", "--tenant", tenant, "--json")
        assert code == 0, err
        assert [a["id"] for a in json.loads(out)["approvals"]] == [waiting.id]
        code, out, err = await kernos(config, "approvals", "--tenant", tenant)
        assert code == 0, err
        assert f"  arguments: {waiting.request['arguments']}" in out.splitlines()
        code, _, err = await kernos(config, "approve", handle.run_id, "--user", "mallory")
        assert code == 1 and "'mallory' may not decide approvals" in err
        code, out, err = await kernos(
            config, "approve", handle.run_id, "--user", "alice", "--reason", "fine"
        )
        assert code == 0, err
        assert out.startswith(f"approved tool.call on tool:charge for run {handle.run_id}")
        await handle.result()
        code, _, err = await kernos(config, "approve", handle.run_id, "--user", "alice")
        assert code == 1 and f"run {handle.run_id!r} has no pending approval" in err


async def until(probe: Any, expected: object, deadline_s: float = 20) -> None:
    await eventually(
        probe, lambda found: found == expected, what=repr(expected), timeout_s=deadline_s
    )


async def test_a_budget_overrun_marked_for_approval_waits_instead_of_failing(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"overrun-{uuid.uuid4().hex[:8]}"
    settings = tool_settings(
        temporal, postgres, tmp_path,
        policy=f"a, *, *, {tenant}, budget:{tenant}, llm.*\n",
    )  # fmt: skip
    async with workers_and_client(settings) as client:
        await client.set_budget(tenant, 1)  # the first call spends it
        handle = await client.submit(RunSpec(agent="steps", task="2", tenant=tenant))
        waiting = await pending_of(client, handle.run_id)
        assert (waiting.syscall, waiting.resource) == ("llm.chat", f"budget:{tenant}")
        await client.approve(handle.run_id, user="operator", reason="finish the job")
        result = await handle.result()
        rows = await audited(client, handle.run_id)
    assert result.syscalls == 2
    assert [(s, d, b) for s, d, b, _ in rows] == [
        ("llm.chat", "allow", "policy"),
        ("llm.chat", "deny", "approval"),  # over budget: waiting, not failing
        ("approval.decide", "allow", "policy"),
        ("llm.chat", "allow", "approval"),
        ("run.end", "allow", "policy"),
    ]
