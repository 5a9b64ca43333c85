"""Denial of service: a tenant whose agent code exhausts its pool hurts only its own runs.

Each attacker is agent code in a confined pool with small limits: a memory hog, a fork bomb,
a busy loop in workflow code, code that ends its own process at every activation, and code
that forges a frame of the child's protocol on its pipe to the host. Each
is contained by its pool's limits (cgroups here, as root; rlimits and seccomp with
`cgroups = false`, as on a rootless host) and the host's count of how often a run's code ended
its pool's process: the attacker's run fails, `PoolLimitExceeded`, naming
what ended it, while another tenant's run on the same host completes with its true output.

Others hold what Temporal keeps for a run, going around the SDK that keeps an honest run within
its limits: a flood of syscalls, of timers, a history that grows without end, a payload too
big to store. The host counts what each run holds, and fails the one past a limit,
`RunLimitExceeded`, naming it; the same work done through the SDK waits its turn or raises
PayloadTooLarge in agent code, and the run goes on.

And one pool's runs that hold their workflow tasks (code that blocks) give back all but their
share of the host's workflow-task slots once another tenant's run wants one; a task given
back must still end within the activation timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from kernos import KernosClient, RunFailed, RunSpec
from kernos.client import connect_temporal
from kernos.infra.pool_limits import (
    SessionMember,
    autogroups_shortfall,
    cgroups_shortfall,
    descendants,
)
from kernos.infra.postgres import EmbeddedPostgres
from kernos.infra.temporal_dev import TemporalDevServer
from kernos.kernel.config import Settings
from kernos.workflows.host_carry import HOST_CARRY
from kernos.workflows.pool_deaths import POOL_DEATH
from kernos.workflows.pool_host import PoolRunner
from kernos.workflows.pool_status import PoolState
from tests.conftest import KeepHistory, make_settings, workers
from tests.hostile import HOSTILE_AGENTS
from tests.waiting import eventually, until_timer

LIMITS: dict[str, Any] = {
    "mode": "bwrap",
    "memory_mib": 400,
    "processes": 200,
    "activation_timeout_s": 3,
    "max_child_deaths": 2,
}


@pytest.mark.parametrize(
    ("attacker", "cgroups", "named"),
    [
        ("hog", True, "over its memory limit (400 MiB)"),
        ("hog", False, "over its memory limit (400 MiB, as address space"),
        ("spinner", True, "did not answer within 3 s"),
        ("crasher", True, "the pool's process exited"),
        ("loader", True, "sent an answer to nothing it was asked"),
    ],
    ids=[
        "memory-hog",
        "memory-hog-without-cgroups",
        "busy-loop",
        "crash-at-every-activation",
        "forged-loaded-frame",
    ],
)
async def test_an_attacker_that_keeps_ending_its_pool_fails_alone(
    temporal: TemporalDevServer,
    postgres: EmbeddedPostgres,
    attacker: str,
    cgroups: bool,
    named: str,
) -> None:
    if attacker == "hog" and cgroups and cgroups_shortfall() is not None:
        pytest.skip(f"memory limits need cgroups: {cgroups_shortfall()}")
    # Without cgroups the hog must fill its address space (1.7 GiB) before its limit: time
    # enough for that on a loaded machine.
    isolation = {**LIMITS, "cgroups": cgroups, **({} if cgroups else {"activation_timeout_s": 30})}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    async with workers(settings), await KernosClient.connect(settings) as client:
        attack = await client.submit(
            RunSpec(agent=attacker, task="go", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        victim = await client.submit(
            RunSpec(agent="echo", task="unharmed", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        with pytest.raises(RunFailed) as failed:
            await attack.result()
        assert "unharmed" in (await victim.result()).output
    assert failed.value.error_type == "PoolLimitExceeded", failed.value
    # At least the limit's count: a death the SDK had already given up on counts too.
    assert re.search(r"broke its pool's process [2-9] times", failed.value.message)
    assert named in failed.value.message


@dataclasses.dataclass
class TwoHosts:
    """A hostile run that broke its pool's process on one host, then on a second, until it
    failed: how it failed, the first host (stopped), what the second charged it for, and its
    handle."""

    failed: RunFailed
    first: PoolRunner
    charged_on_second: list[str]
    handle: WorkflowHandle[Any, Any]


async def on_two_hosts(
    settings: Settings,
    agent: str,
    task: str,
    first_host_done: Callable[[WorkflowHandle[Any, Any], PoolRunner], Awaitable[object]],
) -> TwoHosts:
    """Run `agent` on a host until `first_host_done`, then on a second host until it fails."""
    async with await KernosClient.connect(settings) as client:
        async with workers(settings) as first:
            assert first.pools is not None
            run = await client.submit(
                RunSpec(agent=agent, task=task, tenant=f"evil-{uuid.uuid4().hex[:6]}")
            )
            handle = client.temporal.get_workflow_handle(run.run_id)
            await first_host_done(handle, first.pools)
        async with workers(settings) as second:
            assert second.pools is not None
            charged: list[str] = []
            charge = second.pools.died_running

            def counting(run_id: str, reason: str) -> int:
                charged.append(reason)
                return charge(run_id, reason)

            second.pools.died_running = counting  # type: ignore[method-assign]
            with pytest.raises(RunFailed) as failed:
                await run.result()
    assert failed.value.error_type == "PoolLimitExceeded", failed.value
    return TwoHosts(failed.value, first.pools, charged, handle)


async def test_a_runs_pool_deaths_count_on_every_host_after(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # A run that ends its pool's process at every activation breaks it a few times on one
    # host, which then stops (restarted, or another host takes its runs): the next host reads
    # those from the run's history, and fails the run once it has broken six in all, rather
    # than allow it six of its own (after every restart, on every host).
    isolation = {**LIMITS, "max_child_deaths": 6}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    keys: list[str] = []

    async def two_deaths(handle: WorkflowHandle[Any, Any], pools: PoolRunner) -> None:
        keys.append(f"{handle.id}/{(await handle.describe()).run_id}")
        await eventually(lambda: pools.deaths(keys[0])[0], lambda n: n >= 2, what="two deaths")

    hosts = await on_two_hosts(settings, "crasher", "go", two_deaths)
    # (Read once the first host has stopped: it may charge one more as it stops.)
    before = hosts.first.deaths(keys[0])[0]
    assert before < 6, "the first host ended the run itself: nothing left to count"
    assert "broke its pool's process 6 times" in hosts.failed.message
    assert len(hosts.charged_on_second) == 6 - before, (before, hosts.charged_on_second)
    # Each death is in the run's history, as the Temporal UI shows it.
    history = await hosts.handle.fetch_history()
    said = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert said.count(POOL_DEATH) >= before, said


async def test_a_run_takes_its_pool_deaths_into_its_next_execution_on_another_host(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # The wanderer breaks its pool's process on the first host (at each attempt of its first
    # task for 4 s: a few times, each attempt waiting for a new process), continues as new, and
    # breaks it again on a second host (the first has stopped): that host fails it once it has
    # broken eight in all, rather than allow it eight of its own. (A header of the run's own
    # on its continue-as-new is refused: test_command_check.)
    isolation = {**LIMITS, "max_child_deaths": 8}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)

    async def continued(handle: WorkflowHandle[Any, Any], pools: PoolRunner) -> None:
        first = (await handle.describe()).run_id

        async def latest() -> str:
            return (await handle.describe()).run_id

        await eventually(latest, lambda now: now != first, what="a continuation")

    hosts = await on_two_hosts(settings, "wanderer", "8", continued)
    assert "broke its pool's process 8 times" in hosts.failed.message
    # What the first host counted started the continued execution.
    history = await hosts.handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    carry = json.loads(started.header.fields[HOST_CARRY].data)
    assert carry["deaths"] is not None, carry
    assert len(hosts.charged_on_second) == 8 - carry["deaths"]["count"], (carry, hosts)


async def test_a_fork_bomb_is_bounded_by_its_pool(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    if cgroups_shortfall() is not None:
        pytest.skip(f"process limits need cgroups: {cgroups_shortfall()}")
    # Memory enough for every fork's copy of the child: the process count is what stops it.
    limits = {**LIMITS, "memory_mib": 3000}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=limits)
    said = await bomb_beside_a_victim(settings)
    forked = int(said.split()[1].rstrip(","))
    # Its pool's process tree (the child's own threads included) stops at the pool's limit.
    assert 0 < forked < LIMITS["processes"], said
    assert "BlockingIOError" in said


async def test_without_cgroups_a_pool_starts_no_process(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # Processes are counted per user, and every pool's user is the same: no rlimit can bound
    # one pool's, so none may start (its threads are bounded by its address space).
    limits = {**LIMITS, "cgroups": False}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=limits)
    said = await bomb_beside_a_victim(settings)
    assert said == "forked 0, then PermissionError"


@pytest.mark.skipif(autogroups_shortfall() is not None, reason=str(autogroups_shortfall()))
@pytest.mark.parametrize(
    ("mode", "said"),
    [
        # Confined, its /proc is read-only.
        ("bwrap", {"first": 9, "wrote": "EROFS", "after": 9, "later": 9}),
        # A plain process may write it; the host's next turn sets it again.
        ("process", {"first": 9, "wrote": "0", "after": 0, "later": 9}),
    ],
)
async def test_without_cgroups_a_pool_cannot_keep_a_higher_cpu_weight(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, mode: str, said: dict[str, Any]
) -> None:
    """Its session group's nice is its share of a contended CPU (`cpu_shares` 128: nice 9)."""
    isolation = {**LIMITS, "mode": mode, "cgroups": False}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    async with workers(settings), await KernosClient.connect(settings) as client:
        run = await client.submit(
            RunSpec(agent="reweigher", task="go", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        assert json.loads((await run.result()).output) == said


async def test_without_cgroups_a_pools_threads_cannot_lower_their_nice(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    """Where the kernel has no session groups, each thread's nice is its CPU weight: 9 (of
    `cpu_shares` 128), for the threads it starts too, and not to be lowered."""
    isolation = {**LIMITS, "cgroups": False}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    async with workers(settings), await KernosClient.connect(settings) as client:
        run = await client.submit(
            RunSpec(agent="renicer", task="go", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        said = json.loads((await run.result()).output)
    assert said == {"first": 9, "lowered": "EACCES", "thread": [9]}, said


async def bomb_beside_a_victim(settings: Settings) -> str:
    """What a fork bomb said of itself; another tenant's run completed after it."""
    async with workers(settings), await KernosClient.connect(settings) as client:
        bomb = await client.submit(
            RunSpec(agent="forker", task="go", tenant=f"evil-{uuid.uuid4().hex[:6]}")
        )
        said = (await bomb.result()).output
        victim = await client.submit(
            RunSpec(agent="echo", task="unharmed", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        assert "unharmed" in (await victim.result()).output
    return said


RUN_LIMITS: dict[str, Any] = {
    "max_pending_syscalls": 8,
    "max_pending_timers": 16,
    "continue_as_new_events": 100,
    "max_history_events": 300,
    "max_payload_bytes": 100_000,
}


async def test_runs_past_their_limits_fail_alone_and_honest_ones_wait(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    settings = make_settings(
        temporal, postgres, agents=HOSTILE_AGENTS, isolation={"mode": "bwrap"},
        limits=RUN_LIMITS, storage={"max_file_bytes": 50_000}, max_task_bytes=50_000,
    )  # fmt: skip
    # Attack -> its agent, its task, what the run fails with.
    attacks = {
        "flooder": ("flooder", "around 40", "the run has 40 syscalls pending, over the limit of "
                    "8 ([limits] max_pending_syscalls)"),
        # (Six left running by each execution: the second goes over.)
        "continuer": ("continuer", "6", "the run has 12 syscalls pending, over the limit of 8 "
                      "([limits] max_pending_syscalls)"),
        # (Four scheduled and cancelled at each workflow task: the third goes over.)
        "canceller": ("flooder", "cancelling 40", "the run has 12 syscalls pending, over the "
                      "limit of 8 ([limits] max_pending_syscalls)"),
        "timers": ("timers", "100", "timers pending, over the limit of 16 "
                   "([limits] max_pending_timers)"),
        "historian": ("historian", "20", "over the limit of 300 ([limits] max_history_events)"),
        "bloater": ("bloater", "around 150000", "a request of syscall storage.write is 1500"),
    }  # fmt: skip
    # Honest runs -> their agent, their task, what they end with.
    honest = {
        "flooder": ("flooder", "honest 40", "listed 40 times"),
        "timers": ("timers", "10", "10 timers started"),
        "bloater": ("bloater", "honest 150000", "refused (150074 bytes, limit 100000): the "
                    "storage.write request is 150074 bytes"),
        # Under the run's payload limit, over the store's file limit: the kernel refuses it.
        "bloater in the kernel": ("bloater", "honest 60000", "refused (60000 bytes, limit "
                                  "50000): the file 'big.txt' is 60000 bytes"),
    }  # fmt: skip
    async with workers(settings), await KernosClient.connect(settings) as client:

        async def submit(agent: str, task: str, who: str) -> Any:
            tenant = f"{who}-{agent}-{uuid.uuid4().hex[:6]}"
            return await client.submit(RunSpec(agent=agent, task=task, tenant=tenant))

        attackers = {
            attack: await submit(agent, task, "evil")
            for attack, (agent, task, _) in attacks.items()
        }
        honest_runs = {
            case: await submit(agent, task, "honest") for case, (agent, task, _) in honest.items()
        }
        victim = await submit("echo", "unharmed", "other")
        for attack, handle in attackers.items():
            with pytest.raises(RunFailed) as failed:
                await handle.result()
            assert failed.value.error_type == "RunLimitExceeded", (attack, failed.value)
            assert attacks[attack][2] in failed.value.message, (attack, failed.value.message)
        for case, handle in honest_runs.items():
            output = (await handle.result()).output
            assert honest[case][2] in output, (case, output)
        assert (
            "over the limit of 100000 bytes ([limits] max_payload_bytes)"
            in (await honest_runs["bloater"].result()).output
        )
        assert "unharmed" in (await victim.result()).output


async def test_an_honest_run_that_cancels_its_syscalls_waits_for_turns_and_does_not_fail(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres, keep_history: KeepHistory
) -> None:
    # Each race leaves up to three listings cancelled, which the host counts for 3 s (their
    # attempts' time): by the third race the run is at its limit of 8, so the SDK holds their
    # turns as the host counts them, into the next execution too (continue-as-new every two
    # races or so). Given back at once, the run would be failed, RunLimitExceeded.
    limits = {"max_pending_syscalls": 8, "continue_as_new_events": 20, "kernel_start_to_close_s": 3}
    settings = make_settings(
        temporal, postgres, agents={"racer": "tests.agents:RacerAgent"},
        isolation={"mode": "bwrap"}, limits=limits,
    )  # fmt: skip
    async with workers(settings), await KernosClient.connect(settings) as client:
        handle = await client.submit(RunSpec(agent="racer", task="8", tenant="racing"))
        assert (await handle.result()).output == "8 races won"
        found = client.temporal.list_workflows(f'WorkflowId = "{handle.run_id}"')
        executions = sorted([e async for e in found], key=lambda e: e.start_time)
        assert len(executions) > 1, "the run never continued as new: the carry is untested"
        carried = []
        for execution in executions[1:]:
            history = await client.temporal.get_workflow_handle(
                handle.run_id, run_id=execution.run_id
            ).fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            carried.append(json.loads(started.input.payloads[0].data)["carried"]["held_turns"])
        # The turns still held as it continued went with it (the host counts them there too).
        assert any(carried), carried
        await keep_history(client.temporal, handle.run_id, "racer-held-turns")


async def test_a_pool_that_holds_its_tasks_leaves_a_share_of_the_slots_free_for_others(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # Six slots, one held by the sticky queue's poll: five tasks at once, one a pool's share, so
    # the host is crowded only once four are taken. The holders' tasks are held 8 s.
    isolation = {"mode": "bwrap", "task_slots": 6, "pool_share": 0.2, "activation_timeout_s": 120}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    evil = f"evil-{uuid.uuid4().hex[:6]}"
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        pools = group.pools
        assert pools is not None

        def evil_pool() -> PoolState:
            state = next((p for p in pools.status().pools if p.pool == evil), None)
            if state is None:
                return PoolState(
                    pool=evil, pid=None, runs=0, age_s=0, idle_s=0, memory_bytes=None, restarts=0
                )
            return state

        holders = [
            await client.submit(RunSpec(agent="holder", task="8", tenant=evil)) for _ in range(6)
        ]
        # Alone on the host, the pool takes every slot; once they are held, it gives back those
        # that leave less than a share free (and its next tasks are turned back), so that
        # others' tasks come in at once.
        await eventually(
            lambda: evil_pool().tasks == 4 and evil_pool().turned_back >= 1,
            what="the pool at four tasks, one given back",
        )
        before = evil_pool()
        await asyncio.sleep(1.5)  # held, by now
        # The victim holds its task 2 s too (within its share): long enough for the host's
        # next look, every 0.25 s, to find the slots crowded with it.
        victim = await client.submit(
            RunSpec(agent="holder", task="2", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        assert (await victim.result()).output == "held"
        # Its first task took the free slot at once, and while it ran one more of the
        # holders' was given back to keep a share free (or a retry of theirs turned back).
        await eventually(
            lambda: evil_pool().turned_back > before.turned_back,
            what="a holder's task given or turned back after the victim's came",
        )
        # Given back, not failed: retried (or done, if their 8 s passed meanwhile).
        statuses = {(await client.show(h.run_id)).status for h in holders}
        assert statuses <= {"running", "completed"}, statuses
        # Once the given-back tasks' code lets go, the process drops them and their answers;
        # it is not ended for them.
        await asyncio.sleep(8)
        assert evil_pool().pid == before.pid and evil_pool().restarts == 0


async def test_a_task_given_back_must_still_end_within_the_activation_timeout(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # As above, with a 20 s activation timeout. Three tasks of the pool are held 8 s, within
    # it; its latest, held 60 s, is given back once another pool holds a task of its own (its
    # 3 s hold leaves the host less than a share free), and the process is ended for it.
    isolation = {"mode": "bwrap", "task_slots": 6, "pool_share": 0.2, "activation_timeout_s": 20}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    evil = f"evil-{uuid.uuid4().hex[:6]}"
    async with host_counting_deaths(settings) as (client, pools, deaths):

        def tasks() -> int:
            return next((p.tasks for p in pools.status().pools if p.pool == evil), 0)

        kept = [
            await client.submit(RunSpec(agent="holder", task="8", tenant=evil)) for _ in range(3)
        ]
        await eventually(lambda: tasks() == 3, what="three held tasks")
        given = await client.submit(RunSpec(agent="holder", task="60", tenant=evil))
        await eventually(lambda: tasks() == 4, what="four held tasks")
        await asyncio.sleep(1.5)
        other = await client.submit(
            RunSpec(agent="holder", task="3", tenant=f"honest-{uuid.uuid4().hex[:6]}")
        )
        assert (await other.result()).output == "held"
        charged, why = await eventually(
            lambda: deaths(given.run_id),
            lambda death: death[0],
            what="the given-back run charged with its process's end",
        )
        assert charged == 1 and "given back to Temporal" in why and "20 s" in why, why
        for run in kept:
            assert await deaths(run.run_id) == (0, "")
        for run in [*kept, given]:
            await run.cancel()


async def test_only_the_run_that_did_not_answer_is_charged_with_its_pools_end(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # Two runs of one pool hold their tasks; the first passes the 6 s timeout while the second,
    # started 3 s later, is still within it when the host ends the process for the first.
    isolation = {"mode": "bwrap", "activation_timeout_s": 6}
    settings = make_settings(temporal, postgres, agents=HOSTILE_AGENTS, isolation=isolation)
    tenant = f"pool-{uuid.uuid4().hex[:6]}"
    async with host_counting_deaths(settings) as (client, pools, deaths):
        stuck = await client.submit(RunSpec(agent="holder", task="20", tenant=tenant))
        await eventually(
            lambda: any(p.pool == tenant and p.tasks for p in pools.status().pools),
            what="the stuck run's task held",
        )
        await asyncio.sleep(3)
        bystander = await client.submit(RunSpec(agent="holder", task="20", tenant=tenant))
        await eventually(
            lambda: any(p.pool == tenant and p.tasks == 2 for p in pools.status().pools),
            what="both runs' tasks held",
        )
        await eventually(
            lambda: deaths(stuck.run_id),
            lambda death: death[0],
            what="the stuck run charged with its process's end",
            timeout_s=10,
            every_s=0.05,
        )
        # The bystander's own timeout is 6 s after its next attempt starts: not yet.
        assert await deaths(bystander.run_id) == (0, "")
        charged, why = await deaths(stuck.run_id)
        assert charged == 1 and "did not answer within 6 s" in why
        await stuck.cancel()
        await bystander.cancel()


async def test_an_activation_slow_for_want_of_a_cpu_is_not_charged(
    temporal: TemporalDevServer, postgres: EmbeddedPostgres
) -> None:
    # A run computes for 5 s on the wall, past the 3 s activation timeout, while its pool's
    # process shares one CPU with three busy processes of the host's: most of that time its
    # process waited for the CPU, so the run is not charged and the process not ended (ended,
    # every run in it would replay: more work for a host that has too much already). The work
    # ends on the wall, not after so much CPU, so that however the host weighs the crowd
    # against the pool (cgroups, autogroups, neither) the activation stays within the 4x cap.
    isolation = {"mode": "bwrap", "activation_timeout_s": 3}
    settings = make_settings(temporal, postgres, isolation=isolation)
    tenant = f"crowded-{uuid.uuid4().hex[:6]}"
    async with host_counting_deaths(settings) as (client, pools, deaths):

        def pool() -> PoolState | None:
            return next((p for p in pools.status().pools if p.pool == tenant), None)

        run = await client.submit(RunSpec(agent="cruncher", task="5", tenant=tenant))
        await eventually(
            lambda: (state := pool()) is not None and state.pid is not None,
            what="the pool's process",
        )
        before = pool()
        assert before is not None and before.pid is not None
        member = SessionMember(before.pid, confined=True)
        await eventually(lambda: member.pid() is not None, what="the process's session")
        session = member.pid()
        assert session is not None
        # Its first task done (its agent imported), within the 3 s timer before its work:
        await until_timer(client.temporal, run.run_id)
        with crowded_cpu([session, *descendants(session, 8)], busy=3):
            cpu = float((await run.result()).output)
        after = pool()
    assert cpu < 3, f"not crowded: the work had {cpu} s of CPU in its 5 s"
    assert await deaths(run.run_id) == (0, "")
    assert after is not None and after.pid == before.pid and after.restarts == 0


@contextlib.contextmanager
def crowded_cpu(processes: list[int], *, busy: int) -> Iterator[None]:
    """The threads of `processes` pinned to one CPU, beside `busy` processes spinning on it."""
    cpu = min(os.sched_getaffinity(0))
    for pid in processes:
        for thread in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(thread), {cpu})
    # Each in a session of its own: with autogroups, each weighs as one process would without.
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(busy)
    ]
    try:
        for spinner in spinners:
            os.sched_setaffinity(spinner.pid, {cpu})
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@contextlib.asynccontextmanager
async def host_counting_deaths(
    settings: Settings,
) -> AsyncIterator[tuple[KernosClient, PoolRunner, Callable[[str], Awaitable[tuple[int, str]]]]]:
    """A pool host and a client, and how often a run was charged with its pool's end (and why)."""
    temporal_client = await connect_temporal(settings)
    async with workers(settings) as group, await KernosClient.connect(settings) as client:
        pools = group.pools
        assert pools is not None

        async def deaths(run_id: str) -> tuple[int, str]:
            first = (await temporal_client.get_workflow_handle(run_id).describe()).run_id
            return pools.deaths(f"{run_id}/{first}")

        yield client, pools, deaths
