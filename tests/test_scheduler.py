"""Scheduling policies order a model's queue; each test has a FIFO control that orders it not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.common import Priority

from kernos import ConfigError, KernosClient, LLMInstance, RunSpec, load_settings
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import DatabaseSettings
from kernos.kernel.scheduler import priority_of
from kernos.kernel.syscalls import Policy, Scheduling
from kernos.testing.fake_openai import FakeOpenAIServer
from kernos.testing.fake_sglang import FakeSGLangServer
from tests.conftest import make_settings, workers
from tests.waiting import eventually


async def served_order(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, queued: list[dict[str, Any]]
) -> list[str]:
    """Occupy a one-slot model with a long request, queue `queued` behind it, return the order
    in which the server then received their requests."""

    def reply(body: dict[str, Any]) -> str:
        last = str(body["messages"][-1]["content"])
        return "busy " * (80 if last == "blocker" else 2)

    async with FakeOpenAIServer(reply, token_delay_s=0.05) as server:
        settings = make_settings(
            temporal,
            postgres,
            # Every waiting call in the kernel's queue (none sent ahead to wait in the server):
            # the order measured is the kernel's.
            llm=[{"name": "one", "model": "one", "base_url": server.base_url, "slots": 1,
                  "queued": 0}],
        )  # fmt: skip
        async with workers(settings), await KernosClient.connect(settings) as client:
            blocker = await client.submit(RunSpec(agent="echo", task="blocker"))
            await eventually(lambda: server.requests, what="the blocker's request", every_s=0.02)
            handles = []
            for spec in queued:
                handle = await client.submit(spec)
                handles.append(handle)
                # Arrival order is submission order only once each syscall is in the queue:
                # runs' workflow tasks run concurrently and could schedule out of order.
                workflow = client.temporal.get_workflow_handle(handle.run_id)
                await eventually(
                    workflow.describe,
                    lambda described: described.raw_description.pending_activities,
                    what="the syscall in the queue", every_s=0.02,
                )  # fmt: skip
            for handle in [blocker, *handles]:
                await handle.result()
    return [str(r.body["messages"][-1]["content"]) for r in server.requests[1:]]


async def test_priority_runs_first(temporal: TemporalDevServer, postgres: EmbeddedPostgres) -> None:
    def queue(policy: str) -> list[dict[str, Any]]:
        lows = [
            {"agent": "echo", "task": f"low{i}", "priority": 5, "policy": policy} for i in range(3)
        ]
        return [*lows, {"agent": "echo", "task": "high", "priority": 1, "policy": policy}]

    # The high-priority run was queued last: only its priority can put it first.
    by_priority = await served_order(temporal, postgres, queue("priority"))
    assert by_priority[0] == "high", by_priority
    in_arrival = await served_order(temporal, postgres, queue("fifo"))
    assert in_arrival == ["low0", "low1", "low2", "high"]


async def test_fair_shares_between_tenants(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    def queue(policy: str) -> list[dict[str, Any]]:
        heavy = [{"agent": "echo", "task": f"a{i}", "tenant": "heavy", "policy": policy}
                 for i in range(6)]  # fmt: skip
        light = [{"agent": "echo", "task": f"b{i}", "tenant": "light", "policy": policy}
                 for i in range(2)]  # fmt: skip
        return heavy + light

    fair = await served_order(temporal, postgres, queue("fair"))
    # The light tenant's two runs are served among the first four, not after the heavy backlog.
    assert {"b0", "b1"} <= set(fair[:4]), fair
    fifo = await served_order(temporal, postgres, queue("fifo"))
    assert fifo == ["a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1"]


def test_policies_map_to_temporal_priority() -> None:
    spec = RunSpec(agent="a", task="t", tenant="acme", priority=2)

    def priority(policy: Policy) -> Priority:
        return priority_of(spec, Scheduling(policy=policy, fairness_weight=2))

    assert priority("fifo") == Priority.default
    assert priority("priority") == Priority(priority_key=2)
    assert priority("fair") == Priority(priority_key=2, fairness_key="acme", fairness_weight=2.0)


def test_scheduler_settings() -> None:
    scheduler = load_settings(scheduler={"policy": "fair", "tenant_weights": {"acme": 3}}).scheduler
    assert scheduler.scheduling(None, "acme") == Scheduling(policy="fair", fairness_weight=3.0)
    assert scheduler.scheduling("fifo", "other") == Scheduling(policy="fifo", fairness_weight=1.0)
    with pytest.raises(ConfigError, match=r"tenant 'acme' must be between 0\.001 and 1000"):
        load_settings(scheduler={"tenant_weights": {"acme": 0}})
    with pytest.raises(ConfigError, match=r"scheduler\.policy"):
        load_settings(scheduler={"policy": "lottery"})


async def test_instances_of_one_model_share_its_pool(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    """Two servers of one model in one kernel process: both pull from the model's queue."""
    async with (
        FakeSGLangServer(step_s=0.01, eos=False) as a,
        FakeSGLangServer(step_s=0.01, eos=False) as b,
    ):
        settings = make_settings(
            temporal,
            postgres,
            llm=[
                {
                    "name": name,
                    "kind": "sglang",
                    "model": "m",
                    "base_url": server.base_url,
                    "slots": 1,
                    "queued": 0,
                }
                for name, server in (("a", a), ("b", b))
            ],
        )
        async with workers(settings), await KernosClient.connect(settings) as client:
            handles = [
                await client.submit(RunSpec(agent="length", task=f"40 run {i}")) for i in range(4)
            ]
            for handle in handles:
                await handle.result()
    assert len(a.requests) + len(b.requests) == 4
    assert a.requests and b.requests


def runs_on(servers: dict[str, FakeSGLangServer], run_id: str) -> list[str]:
    """Which server served each LLM call of a run, in order (the rid names the run)."""
    calls = [
        (index, name)
        for name, server in servers.items()
        for index, r in enumerate(server.requests)
        if r.rid.startswith(run_id)
    ]
    return [name for _, name in sorted(calls)]


@pytest.mark.parametrize(("affinity_s", "expected"), [(10.0, ["a", "a"]), (0.0, ["a", "b"])])
async def test_affinity_waits_for_the_instance_with_the_runs_cache(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, affinity_s: float, expected: list[str]
) -> None:
    """The run's instance is busy when its next call comes and the other one is free: with
    affinity the call waits for its instance; without, it goes to the free one."""
    async with FakeSGLangServer(step_s=0.05, eos=False) as a, FakeSGLangServer() as b:
        servers = {"a": a, "b": b}
        settings = make_settings(temporal, postgres, scheduler={"affinity_s": affinity_s})
        only = {
            name: settings.model_copy(
                update={
                    "llm": [
                        LLMInstance(
                            name=name,
                            kind="sglang",
                            model="m",
                            base_url=s.base_url,
                            slots=1,
                            queued=0,
                        )
                    ]
                }
            )
            for name, s in servers.items()
        }
        agents = settings.model_copy(update={"database": DatabaseSettings()})
        async with (
            workers(agents, kind="agent"),
            await KernosClient.connect(only["a"]) as client,
            workers(only["a"], kind="kernel"),
        ):
            run = await client.submit(RunSpec(agent="pausing", task="1", model="m"))
            await first_call_done(client, run.run_id)
            # Only a polls: this long run takes a's one slot through the run's pause.
            blocker = await client.submit(RunSpec(agent="length", task="60 block", model="m"))
            await eventually(
                lambda: len(a.requests) >= 2, what="the blocker at instance a", every_s=0.01
            )
            async with workers(only["b"], kind="kernel"):
                await run.result()
                await blocker.result()
    assert runs_on(servers, run.run_id) == expected


@pytest.mark.parametrize(("session", "expected"), [("chat-1", "a"), (None, "b")])
async def test_a_sessions_next_run_waits_for_the_instance_that_served_the_session(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, session: str | None, expected: str
) -> None:
    """A chat's first turn was served by instance a; a is busy when its next turn, a new run,
    comes and b is free: the turn of the same session waits for a (its cache holds the chat),
    a run without the session goes to b."""
    async with FakeSGLangServer(step_s=0.05, eos=False) as a, FakeSGLangServer() as b:
        servers = {"a": a, "b": b}
        settings = make_settings(temporal, postgres, scheduler={"affinity_s": 10.0})
        only = {
            name: settings.model_copy(update={"llm": [LLMInstance(
                name=name, kind="sglang", model="m", base_url=s.base_url, slots=1, queued=0,
            )]})
            for name, s in servers.items()
        }  # fmt: skip
        agents = settings.model_copy(update={"database": DatabaseSettings()})
        async with (
            workers(agents, kind="agent"),
            await KernosClient.connect(only["a"]) as client,
            workers(only["a"], kind="kernel"),
        ):
            first = await client.submit(
                RunSpec(agent="length", task="2 turn 1", model="m", session="chat-1")
            )
            await asyncio.wait_for(first.result(), 60)
            # Only a polls: this long run takes a's one slot.
            blocker = await client.submit(RunSpec(agent="length", task="60 block", model="m"))
            await eventually(
                lambda: len(a.requests) >= 2, what="the blocker at instance a", every_s=0.01
            )
            async with workers(only["b"], kind="kernel"):
                turn = await client.submit(
                    RunSpec(agent="length", task="2 turn 2", model="m", session=session)
                )
                await asyncio.wait_for(turn.result(), 60)
                await asyncio.wait_for(blocker.result(), 60)
            record = await client.runs.get(turn.run_id)
    assert runs_on(servers, first.run_id) == ["a"]
    assert runs_on(servers, turn.run_id) == [expected]
    assert record.spec.session == session


async def first_call_done(client: KernosClient, run_id: str) -> None:
    """Wait until the run's first activity has completed."""
    handle = client.temporal.get_workflow_handle(run_id)

    async def completed() -> bool:
        events = (await handle.fetch_history()).events
        return any(e.HasField("activity_task_completed_event_attributes") for e in events)

    await eventually(completed, what="the first call completed", every_s=0.05)


async def test_affinity_falls_back_to_the_pool_when_its_instance_is_gone(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    async with FakeSGLangServer() as a, FakeSGLangServer() as b:
        servers = {"a": a, "b": b}
        settings = make_settings(temporal, postgres, scheduler={"affinity_s": 0.5})
        only = {
            name: settings.model_copy(
                update={
                    "llm": [LLMInstance(name=name, kind="sglang", model="m", base_url=s.base_url)]
                }
            )
            for name, s in servers.items()
        }
        agents = settings.model_copy(update={"database": DatabaseSettings()})
        async with workers(agents, kind="agent"), await KernosClient.connect(only["a"]) as client:
            async with workers(only["a"], kind="kernel"):
                run = await client.submit(RunSpec(agent="pausing", task="3", model="m"))
                await first_call_done(client, run.run_id)
            # Instance a is gone while the run pauses between its two calls.
            async with workers(only["b"], kind="kernel"):
                result = await run.result()
            history = await client.temporal.get_workflow_handle(run.run_id).fetch_history()
    timed_out = [
        e.activity_task_timed_out_event_attributes
        for e in history.events
        if e.HasField("activity_task_timed_out_event_attributes")
    ]
    assert result.output.count("|") == 1  # both calls answered
    assert runs_on(servers, run.run_id) == ["a", "b"]
    assert len(timed_out) == 1, "the second call should wait on instance a's queue, once"


def attempts_of_llm_calls(history: Any) -> list[int]:
    """The attempt at which each of a run's LLM calls started."""
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == "llm.chat"
    ]


async def test_a_dead_instance_takes_no_new_work_until_it_is_back(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    async with FakeSGLangServer() as a, FakeSGLangServer() as b:
        port = int(a.base_url.rsplit(":", 1)[1])
        settings = make_settings(
            temporal,
            postgres,
            llm=[
                {"name": n, "kind": "sglang", "model": "m", "base_url": s.base_url, "slots": 2}
                for n, s in (("a", a), ("b", b))
            ],
        )
        async with workers(settings), await KernosClient.connect(settings) as client:
            await a.stop()

            # Runs until one has met the dead server: its call failed there and was retried.
            async def probe_attempts() -> list[int]:
                handle = await client.submit(RunSpec(agent="length", task="4 probe"))
                await handle.result()
                history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
                return attempts_of_llm_calls(history)

            await eventually(
                probe_attempts, lambda attempts: attempts != [1],
                what="a call that went to the dead instance", every_s=0,
            )  # fmt: skip
            # From then on a's worker takes no new work: only its two pollers, which held slots
            # when it went down, can still take a call each; every other call starts once, on b.
            # (Without the closed slots, about half of these would meet the dead server.)
            handles = [
                await client.submit(RunSpec(agent="length", task=f"4 run {i}")) for i in range(16)
            ]
            retried = 0
            for handle in handles:
                await handle.result()
                history = await client.temporal.get_workflow_handle(handle.run_id).fetch_history()
                retried += attempts_of_llm_calls(history) != [1]
            assert retried <= 2, f"{retried} of 16 calls went to the dead instance first"
            # Back on its port, a is found healthy again and takes work.
            async with FakeSGLangServer(port=port) as revived:

                async def work_done() -> int:
                    await (await client.submit(RunSpec(agent="length", task="4 again"))).result()
                    return len(revived.requests)

                await eventually(work_done, what="work for the revived instance", every_s=0)


async def heavy_tokens_before_light_is_done(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, fair_in_tokens: bool
) -> int:
    """Three 48-token runs of one tenant, then three 8-token runs of another, on one slot:
    how many tokens the first tenant received before the second tenant's last run ended."""
    async with FakeSGLangServer(max_running_requests=1, step_s=0.005, eos=False) as fake:
        instance = {
            "name": "gpu0", "kind": "sglang", "model": fake.served_model_name,
            "base_url": fake.base_url, "slots": 1, "queued": 0,
        }  # fmt: skip
        scheduler = {"policy": "fair", "slice_tokens": 8, "fair_in_tokens": fair_in_tokens}
        # Both tenants in the worker's process: what is measured is the queue's fairness, not
        # a new pool's first run (its child imports the agent's module for the first time).
        settings = make_settings(
            temporal, postgres, llm=[instance], scheduler=scheduler,
            isolation={"mode": "in_process"},
        )  # fmt: skip
        tenants: dict[str, str] = {}
        async with workers(settings), await KernosClient.connect(settings) as client:
            handles = []
            for name, length in [("heavy", 48)] * 3 + [("light", 8)] * 3:
                handle = await client.submit(
                    RunSpec(agent="length", task=f"{length} story", tenant=name)
                )
                handles.append(handle)
                tenants[handle.run_id] = name
                workflow = client.temporal.get_workflow_handle(handle.run_id)
                await eventually(
                    workflow.describe,
                    lambda described: described.raw_description.pending_activities,
                    what="the syscall in the queue", every_s=0.02,
                )  # fmt: skip
            for handle in handles:
                length = 48 if tenants[handle.run_id] == "heavy" else 8
                assert (await handle.result()).output.startswith(f"{length} ")  # whole

    def tenant(rid: str) -> str:
        return next(t for run, t in tenants.items() if rid.startswith(run))

    light_done = max(r.finished or 0.0 for r in fake.requests if tenant(r.rid) == "light")
    return sum(
        r.output_tokens
        for r in fake.requests
        if tenant(r.rid) == "heavy" and r.received < light_done
    )


async def test_fair_shares_tokens_not_calls(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # In tokens: each dispatch is one 8-token slice, so the light tenant's three runs pass
    # after about three heavy slices. In calls (the control): each heavy call is 48 tokens.
    in_tokens = await heavy_tokens_before_light_is_done(temporal, postgres, True)
    in_calls = await heavy_tokens_before_light_is_done(temporal, postgres, False)
    assert in_tokens <= 5 * 8, in_tokens
    assert in_calls >= 2 * 48, in_calls


async def test_an_instance_sends_one_call_ahead_to_wait_at_its_server(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    """One slot and the default `queued` (1): while a generation runs, the server holds the
    next call, to start it the moment the slot frees; the others wait in the kernel's queue."""
    async with FakeSGLangServer(max_running_requests=1, step_s=0.02, eos=False) as fake:
        instance = {"name": "gpu0", "kind": "sglang", "model": "m", "base_url": fake.base_url,
                    "slots": 1}  # fmt: skip
        settings = make_settings(temporal, postgres, llm=[instance])
        async with workers(settings), await KernosClient.connect(settings) as client:
            handles = [
                await client.submit(RunSpec(agent="length", task=f"20 run {i}")) for i in range(4)
            ]
            done = asyncio.gather(*(handle.result() for handle in handles))
            waiting_at_server = set()
            while not done.done():
                waiting_at_server.add(fake.load()["num_waiting_reqs"])
                await asyncio.sleep(0.005)
            await done
    assert max(waiting_at_server) == 1, waiting_at_server
