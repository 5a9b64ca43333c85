"""Nothing a workflow claims about a syscall is believed: each forged claim is refused and audited.

The hostile agent (tests.agents.ForgerAgent) schedules its own activity, as agent code escaping
the dispatcher would, with one option forged at a time. Two lines of defence see it: the pool's
host, which refuses the command before Temporal sees it and ends the run; and behind it the
kernel, which compares each claim with the syscall table and with what it fixed when it
admitted the run, for whatever reaches a kernel queue another way (a poller holding Temporal
credentials). The kernel's line is tested with agent code in the worker's own process
(`[isolation] mode = "in_process"`), where no host stands in front of it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.common import Priority

from kernos import ConfigError, KernosClient, RunSpec, Settings, load_settings
from kernos.client import RunFailed, SyscallView
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.claims import Claims, Served, false_claim, lost_affinity
from kernos.kernel.config import DatabaseSettings
from kernos.kernel.llm.scripted import ScriptedBackend
from kernos.kernel.run_store import RunRecord
from kernos.kernel.syscall_table import LLM_CHAT, LLM_COMPACT, retry_policy
from kernos.kernel.syscalls import (
    CompactRequest,
    LLMRequest,
    Message,
    Scheduling,
    SyscallLimits,
)
from tests.conftest import KeepHistory, make_settings, workers
from tests.test_cli import config_file, kernos
from tests.waiting import eventually

DEFAULT_POLICY = (Path(__file__).parent.parent / "policies" / "policy.csv").read_text()


def claim_settings(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    tmp_path: Path,
    tenant: str,
    isolation: str = "in_process",
) -> Settings:
    """Two models, `open` and `closed`; the tenant may use only `open`."""
    path = tmp_path / "policy.csv"
    path.write_text(f"{DEFAULT_POLICY}p, *, *, {tenant}, llm:closed, llm.*, deny\n")
    return make_settings(
        temporal, postgres,
        llm=[
            {"name": "open-1", "kind": "scripted", "model": "open"},
            {"name": "closed-1", "kind": "scripted", "model": "closed"},
        ],
        policy={"policy_path": str(path)},
        isolation={"mode": isolation},
    )  # fmt: skip


async def forge(
    client: KernosClient, tenant: str, forged: dict[str, Any], *, priority: int = 3
) -> tuple[str, str, list[SyscallView]]:
    """One forger run: its id, what it returned, and its syscalls as `kernos show` has them
    (without its end, `run.end`, which every run has)."""
    handle = await client.submit(
        RunSpec(agent="forger", task=json.dumps(forged), tenant=tenant, model="open",
                priority=priority)
    )  # fmt: skip
    output = (await handle.result()).output
    calls = (await client.show(handle.run_id)).syscalls
    assert calls[-1].syscall == "run.end", calls
    return handle.run_id, output, calls[:-1]


def forged_cases(settings: Settings) -> list[tuple[str, dict[str, Any], str]]:
    """(case, what the forger sends, what the refusal must say)."""
    prefix = settings.temporal.llm_queue_prefix
    tools = settings.tools.queue_prefix
    return [
        (
            "another model's queue",
            {"model": "open", "queue": f"{prefix}closed"},
            f"names model 'open' but was scheduled on queue '{prefix}closed', whose instances "
            "serve 'closed'",
        ),
        (
            "a higher priority and another tenant's fairness",
            {"priority": {"priority_key": 1, "fairness_key": "victim", "fairness_weight": 1000}},
            "claimed priority key 1, fairness key 'victim' weight 1000; run run-",
        ),
        (
            "a priority on a kernel syscall",
            {"syscall": "storage.write", "priority": {"priority_key": 1}},
            "storage.write claimed priority key 1",
        ),
        (
            "a longer start-to-close timeout",
            {"start_to_close_s": 36_000},
            "claimed a start-to-close timeout of 36000 s; the run's is 600 s",
        ),
        (
            "a longer heartbeat timeout",
            {"heartbeat_s": 300},
            "claimed a heartbeat timeout of 300 s; the run's is 30 s",
        ),
        (
            "a tighter retry loop",
            {"retry": {"initial_interval": 0.001, "maximum_interval": 0.001}},
            "claimed retry policy (initial 0.001 s",
        ),
        ("fewer attempts", {"retry": {"maximum_attempts": 1}}, "1 attempts"),
        (
            "a tool on another tool's queue",
            {"syscall": "tool.call", "tool": "write_file", "queue": f"{tools}calculator",
             "arguments": json.dumps({"path": "x.txt", "content": "forged"})},
            f"names tool 'write_file' but was scheduled on queue '{tools}calculator'",
        ),
    ]  # fmt: skip


async def test_each_forged_claim_is_refused_and_audited(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"claims-{uuid.uuid4().hex[:8]}"
    settings = claim_settings(temporal, postgres, tmp_path, tenant)
    open_, closed = ScriptedBackend(), ScriptedBackend()
    backends = {"open-1": open_, "closed-1": closed}
    async with workers(settings, backends=backends), await KernosClient.connect(settings) as client:
        _, honest, calls = await forge(client, tenant, {}, priority=5)
        assert honest.startswith("ok: scripted reply"), honest
        assert [(c.syscall, c.decision, c.basis) for c in calls] == [
            ("llm.chat", "allow", "policy")
        ]
        for case, forged, said in forged_cases(settings):
            run_id, output, calls = await forge(client, tenant, forged, priority=5)
            assert output.startswith("refused AccessDenied: "), f"{case}: {output}"
            assert said in output, f"{case}: {output}"
            [call] = calls
            assert (call.decision, call.basis, call.outcome) == ("deny", "claim", None), case
            assert said in (call.reason or ""), case
        async with client.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM files WHERE tenant = %(t)s) AS files,"
                " (SELECT count(*) FROM tool_calls WHERE tenant = %(t)s) AS tool_calls",
                {"t": tenant},
            )
            assert await cursor.fetchone() == {"files": 0, "tool_calls": 0}
        # The operator's `kernos show` names the false claim.
        code, shown, err = await kernos(config_file(settings, tmp_path), "show", run_id)
    assert code == 0, err
    assert "deny:claim" in shown and said in shown
    assert closed.calls == 0  # the closed model served nothing
    assert open_.calls == 1  # only the honest call was generated


#: Forged cases whose options the pool's host can judge from the run's input alone; the others
#: (a request naming one model or tool on another's queue) need the request read, which the
#: kernel does.
HOST_REFUSES = {
    "a higher priority and another tenant's fairness": "at a priority or fairness other than",
    "a priority on a kernel syscall": "at a priority or fairness other than",
    "a longer start-to-close timeout": "start-to-close timeout other than the table's",
    "a longer heartbeat timeout": "heartbeat timeout other than the table's",
    "a tighter retry loop": "retry policy other than the table's",
    "fewer attempts": "retry policy other than the table's",
}


async def test_the_pool_host_ends_a_run_that_forges_options(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"claims-{uuid.uuid4().hex[:8]}"
    settings = claim_settings(temporal, postgres, tmp_path, tenant, isolation="bwrap")
    open_, closed = ScriptedBackend(), ScriptedBackend()
    backends = {"open-1": open_, "closed-1": closed}
    async with workers(settings, backends=backends), await KernosClient.connect(settings) as client:
        _, honest, _ = await forge(client, tenant, {}, priority=5)
        assert honest.startswith("ok: scripted reply"), honest
        for case, forged, said in forged_cases(settings):
            if case not in HOST_REFUSES:
                # Through the host, the kernel refuses it as in the test above.
                _, output, _ = await forge(client, tenant, forged, priority=5)
                assert output.startswith("refused AccessDenied: ") and said in output, case
                continue
            with pytest.raises(RunFailed) as failed:
                await forge(client, tenant, forged, priority=5)
            assert failed.value.error_type == "CommandRefused", case
            assert HOST_REFUSES[case] in failed.value.message, (case, failed.value.message)
    assert closed.calls == 0
    assert open_.calls == 1


async def test_an_honest_run_outlives_a_change_of_weights(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"weights-{uuid.uuid4().hex[:8]}"
    admitted = scheduled(
        claim_settings(temporal, postgres, tmp_path, tenant),
        policy="fair",
        tenant_weights={tenant: 2.5},
    )
    # The kernel's workers now run with another weight for the tenant: the run's record, not
    # today's settings, says what its syscalls may claim.
    serving = scheduled(admitted, tenant_weights={tenant: 7.0})
    async with workers(serving), await KernosClient.connect(admitted) as client:
        handle = await client.submit(RunSpec(agent="steps", task="2", tenant=tenant, model="open"))
        result = await handle.result()
        view = await client.show(handle.run_id)
    assert result.output.count("scripted reply") == 2
    assert [(c.syscall, c.decision) for c in view.syscalls] == [
        ("llm.chat", "allow"),
        ("llm.chat", "allow"),
        ("run.end", "allow"),
    ]
    assert view.record.scheduling.fairness_weight == 2.5


@pytest.mark.parametrize("weight", [0.0001, 5000.0])
def test_weights_outside_temporals_range_are_refused(weight: float) -> None:
    # Temporal would clamp them, and the claimed weight would no longer be the run's.
    with pytest.raises(ConfigError, match=r"between 0\.001 and 1000 \(Temporal's range\)"):
        load_settings(scheduler={"tenant_weights": {"acme": weight}})


def scheduled(settings: Settings, **changes: Any) -> Settings:
    """`settings` with `[scheduler]` settings changed."""
    return settings.model_copy(update={"scheduler": settings.scheduler.model_copy(update=changes)})


async def audit_rows(client: KernosClient, run_id: str) -> list[tuple[str, str, str]]:
    view = await client.show(run_id)
    return [(c.syscall, c.decision, c.basis) for c in view.syscalls]


async def test_an_instance_queue_takes_only_runs_the_instance_served(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path,
    keep_history: KeepHistory,
) -> None:  # fmt: skip
    tenant = f"affinity-{uuid.uuid4().hex[:8]}"
    settings = scheduled(claim_settings(temporal, postgres, tmp_path, tenant), affinity_s=3.0)
    own_queue = f"{settings.temporal.llm_queue_prefix}open@open-1"
    # Agent workers hold no DSN; kernel workers come and go under them.
    async with workers(settings.model_copy(update={"database": DatabaseSettings()}), kind="agent"):
        async with workers(settings, kind="kernel"), await KernosClient.connect(settings) as client:
            # A run the instance never served cannot wait on its own queue, ahead of the pool.
            _, output, calls = await forge(client, tenant, {"queue": own_queue})
            assert output.startswith("refused AffinityLost: "), output
            assert "has served neither it nor its session lately" in output
            assert [(c.decision, c.basis) for c in calls] == [("deny", "claim")]
            # An honest run's later calls go there, and are served.
            steps = await client.submit(RunSpec(agent="steps", task="3", tenant=tenant))
            await steps.result()
            assert await audit_rows(client, steps.run_id) == [
                *[("llm.chat", "allow", "policy")] * 3,
                ("run.end", "allow", "policy"),
            ]
            # A run whose next call comes after the kernel worker restarted...
            pausing = await client.submit(RunSpec(agent="pausing", task="4", tenant=tenant))
            await eventually(
                lambda: audit_rows(client, pausing.run_id), what="the paused run's first call"
            )
        async with workers(settings, kind="kernel"), await KernosClient.connect(settings) as client:
            # ...is turned away from the instance's queue and served from the pool.
            result = await pausing.result()
            assert result.output.count("scripted reply") == 2
            rows = await audit_rows(client, pausing.run_id)
            await keep_history(client.temporal, pausing.run_id, "pausing-affinity-lost")
    # (Its end's row comes when kernel workers learn it: its handle's client had closed.)
    assert rows[:3] == [
        ("llm.chat", "allow", "policy"),
        ("llm.chat", "deny", "claim"),
        ("llm.chat", "allow", "policy"),
    ]


async def test_a_run_without_affinity_cannot_use_an_instance_queue(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    tenant = f"no-affinity-{uuid.uuid4().hex[:8]}"
    admitted = claim_settings(temporal, postgres, tmp_path, tenant)
    # The workers poll instance queues (some runs have affinity); this run was admitted without.
    serving = scheduled(admitted, affinity_s=3.0)
    own_queue = f"{admitted.temporal.llm_queue_prefix}open@open-1"
    async with workers(serving), await KernosClient.connect(admitted) as client:
        _, output, calls = await forge(client, tenant, {"queue": own_queue})
        _, wrong, _ = await forge(client, tenant, {"arguments_instead": True})
    assert "was admitted without cache affinity" in output
    assert [(c.decision, c.basis) for c in calls] == [("deny", "claim")]
    assert "llm.chat takes one LLMRequest; the workflow sent dict, str" in wrong


def fair_record(
    affinity_s: float = 2.0,
    run_id: str = "run-1",
    user: str = "u",
    session: str | None = None,
    agent: str = "a",
) -> RunRecord:
    spec = RunSpec(
        agent=agent, task="x", tenant="acme", model="m", priority=4, user=user, session=session
    )
    return RunRecord(
        run_id=run_id, first_execution_run_id="e", tenant="acme", user=user, agent=agent,
        priority=4, model="m", spec=spec, status="running", created_at=datetime.now(UTC),
        scheduling=Scheduling(policy="fair", fairness_weight=2.5, affinity_s=affinity_s),
        limits=SyscallLimits(), finished_at=None, output=None, error=None, input_tokens=0,
        output_tokens=0,
    )  # fmt: skip


FORGED: list[tuple[str, dict[str, Any], str]] = [
    # (case, fields of Claims changed, what the refusal says)
    ("another workflow type", {"workflow_type": "AuditAnchor"}, "not an agent run"),
    (
        "the fairness key alone",
        {"priority": Priority(priority_key=4, fairness_key="victim", fairness_weight=2.5)},
        "fairness key 'victim' weight 2.5",
    ),
    (
        "the weight alone",
        {"priority": Priority(priority_key=4, fairness_key="acme", fairness_weight=1000)},
        "fairness key 'acme' weight 1000",
    ),
    ("no fairness at all", {"priority": Priority(priority_key=4)}, "claimed priority key 4;"),
    (
        "errors it will not retry",
        {"retry_policy": replace(retry_policy(SyscallLimits()), non_retryable_error_types=["X"])},
        "not retrying ['X']",
    ),
    ("no retry policy reported", {"retry_policy": None}, "claimed retry policy unknown"),
    (
        "a schedule-to-close timeout",
        {"schedule_to_close": timedelta(seconds=1)},
        "schedule-to-close timeout of 1 s",
    ),
    (
        "a longer wait on the instance's queue",
        {"task_queue": "llm.m@i1", "waited": timedelta(seconds=9)},
        "waited 9.0 s on instance queue 'llm.m@i1'; run run-1 waits at most 2 s there",
    ),
]


@pytest.mark.parametrize(("case", "changed", "said"), FORGED, ids=[c[0] for c in FORGED])
def test_each_claim_is_checked(case: str, changed: dict[str, Any], said: str) -> None:
    record = fair_record()
    served = Served("llm", frozenset({"llm.m", "llm.m@i1"}), model="m", affinity_queue="llm.m@i1")
    request = CompactRequest(conversation="c1", model="m")
    honest = Claims.honest(LLM_COMPACT, record, "llm.m")
    assert false_claim(LLM_COMPACT, honest, request, record, served) is None
    found = false_claim(LLM_COMPACT, replace(honest, **changed), request, record, served)
    assert found is not None and said in found, found


def test_a_compaction_by_another_model_is_refused() -> None:
    record = fair_record()
    served = Served("llm", frozenset({"llm.m"}), model="m")
    request = CompactRequest(conversation="c1", model="other")
    found = false_claim(
        LLM_COMPACT, Claims.honest(LLM_COMPACT, record, "llm.m"), request, record, served
    )
    assert found is not None and "names model 'other'" in found


def test_only_runs_an_instance_served_wait_on_its_queue() -> None:
    record = fair_record()
    served = Served("llm", frozenset({"llm.m", "llm.m@i1"}), model="m", affinity_queue="llm.m@i1")
    on_own = Claims.honest(LLM_CHAT, record, "llm.m@i1")
    assert lost_affinity(Claims.honest(LLM_CHAT, record, "llm.m"), record, served) is None
    assert "has served neither it nor its session lately" in (
        lost_affinity(on_own, record, served) or ""
    )
    served.recent.note(record)
    assert lost_affinity(on_own, record, served) is None
    without = fair_record(affinity_s=0)
    request = LLMRequest(model="m", messages=[Message(role="user", content="hi")])
    found = false_claim(LLM_CHAT, on_own, request, without, served)
    assert found is not None and "admitted without cache affinity" in found


def test_a_sessions_next_run_waits_on_the_instance_that_served_the_session() -> None:
    """A session's runs share the instance's cache; another user's or agent's session of the
    same name, or a run without one, does not."""
    served = Served("llm", frozenset({"llm.m", "llm.m@i1"}), model="m", affinity_queue="llm.m@i1")
    served.recent.note(fair_record(run_id="run-1", session="chat-7"))
    on_own = Claims.honest(LLM_CHAT, fair_record(), "llm.m@i1")
    assert lost_affinity(on_own, fair_record(run_id="run-2", session="chat-7"), served) is None
    for stranger in (
        fair_record(run_id="run-3", session="chat-8"),
        fair_record(run_id="run-4", session="chat-7", user="mallory"),
        fair_record(run_id="run-6", session="chat-7", agent="another"),
        fair_record(run_id="run-5"),
    ):
        assert lost_affinity(on_own, stranger, served) is not None, stranger.run_id
