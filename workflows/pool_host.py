"""Pools: agent code runs in a confined child per pool, driven by a trusted host.

The host is an ordinary Temporal worker for `AgentRun` (its polling, sticky queues, replay and
Temporal connection are kernos's code), whose workflow runner hands each activation, through
the SDK's `WorkflowRunner` seam, over a pipe to the child of the run's pool. It checks every
answer and message from outside the run before the child sees it (`activation_check`), and
every command the child answers before Temporal sees it (`commands.CommandCheck`). A run's
pool comes from its input, which the kernel wrote at admission (`RunInput.pool`, else its
tenant).

The child (`pool_child`, started and spoken to through `pool_process`) holds no credential,
no Temporal client and, under bubblewrap, reaches no network, file or process outside its own
view (`kernos.infra.confine`). One child serves a pool's runs; a spare one waits, already
started, so that a new pool costs no interpreter start.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import temporalio.converter
import temporalio.workflow
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_commands import FailWorkflowExecution, WorkflowCommand
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner

from kernos.infra import confine
from kernos.infra.pool_limits import autogroups_shortfall, cgroups_shortfall, sweep
from kernos.kernel.config import Settings, state_dir
from kernos.kernel.result_seal import check_key
from kernos.kernel.syscalls import RunInput
from kernos.workflows.activation_check import ActivationCheck
from kernos.workflows.agent_check import broken_agents
from kernos.workflows.commands import CommandCheck
from kernos.workflows.host_carry import HostCarry, carried, write_carry
from kernos.workflows.pool_deaths import DeathRecorder, PoolDeath, deaths_in
from kernos.workflows.pool_process import (
    CHILD_START_S,
    ChildDied,
    GivenBack,
    PoolChild,
    child_spec,
)
from kernos.workflows.pool_status import (
    EVERY_S,
    HostPools,
    PoolState,
    TemporalReports,
    publish,
    withdraw,
)
from kernos.workflows.pool_tracing import RunTrace
from kernos.workflows.pool_wire import (
    CPU_TIME_BYTES,
    ERROR,
    ChildSetup,
    InstanceSpec,
    read_completion,
)
from kernos.workflows.run_limits import RUN_LIMIT, RunBounds
from kernos.workflows.slot_shares import HELD_S, GiveBack, SlotShares

log = logging.getLogger(__name__)

#: The error type of a run the host ended for a command it refused.
REFUSED = "CommandRefused"
#: Commands after which the run is over on this host.
_ENDS_RUN = frozenset(
    {
        "complete_workflow_execution",
        "fail_workflow_execution",
        "cancel_workflow_execution",
        "continue_as_new_workflow_execution",
    }
)
#: How long an eviction may take in the child before the host gives up on the child.
_EVICTION_S = 10.0
#: Runs whose pool-process deaths are remembered (the oldest are forgotten first).
_DEATHS_KEPT = 10_000
#: The error type of a run that kept ending its pool's process.
LIMIT = "PoolLimitExceeded"
#: How long Temporal's SDK lets an activation take where it checks (not on a pool's host,
#: which times activations itself): a task held longer, busy, counts against its run.
_SDK_DEADLOCK_S = 2.0
#: How often the host looks for pools over their share of the slots that others wait for.
_REBALANCE_S = 0.25
#: A pool whose process ended unasked this many times in the window waits for the next.
_RESTARTS = 10
_RESTART_WINDOW_S = 300.0


class PoolRunner(WorkflowRunner):
    """A workflow runner that runs each run's code in its pool's confined child."""

    def __init__(self, settings: Settings) -> None:
        self.isolation = settings.isolation
        self.spec = child_spec(settings)
        self.how = self.spec.how
        if self.how.shortfall is not None:
            log.warning(
                "AGENT CODE IS NOT CONFINED on this host (%s): one pool only, unless "
                "[isolation] shared_unconfined says isolation is off",
                self.how.shortfall,
            )
        if not self.spec.cgrouped:
            log.warning(
                "pools have no cgroups on this host (%s): their memory is bounded as address "
                "space, %s, and %s",
                cgroups_shortfall() or "[isolation] cgroups = false",
                "no process of theirs may start another"
                if self.how.confined and confine.seccomp_shortfall() is None
                else "their processes are NOT bounded (no seccomp filter here)",
                "their CPU is shared out by session groups (autogroups), each weighted by "
                "[isolation] cpu_shares"
                if autogroups_shortfall() is None
                else f"their CPU is shared out by thread ({autogroups_shortfall()}), each at "
                "the nice nearest [isolation] cpu_shares: a pool's busy threads each weigh that",
            )
        sweep()
        self._agents = dict(settings.agents)
        key = settings.temporal.check_key_hex()
        #: The key this host checks syscall results with before a child sees them.
        self.check_key = check_key(key) if key is not None else None
        self._children: dict[str, PoolChild] = {}
        self._spare: PoolChild | None = None
        self._lock = threading.Lock()
        self._instances = itertools.count(1)
        #: Agent name -> why its module does not import, once the start-up check is done.
        self.checked = concurrent.futures.Future[dict[str, str]]()
        #: Run (across its continuations: its first execution) -> how many times its
        #: activations ended its pool's process, and what ended it the last time.
        self._deaths: collections.OrderedDict[str, tuple[int, str]] = collections.OrderedDict()
        #: Writes each death into its run's history, for every host after this one to count
        #: (`pool_deaths`); set by the worker that runs this host.
        self.recorder: DeathRecorder | None = None
        #: Sends this host's reports to Temporal, for `kernos status` on any machine; set by
        #: the worker that runs this host, unless `[isolation] reports_workflow_id` is "".
        self.reports: TemporalReports | None = None
        self._closed = threading.Event()
        #: When each pool's process ended unasked, lately: a pool that keeps ending it waits.
        self._restarts: dict[str, collections.deque[float]] = {}
        #: The one pool a host that cannot confine serves, once it has served one.
        self._served: str | None = None
        #: Runs of each pool in this host's cache.
        self._runs: collections.Counter[str] = collections.Counter()
        #: Who holds this host's workflow-task slots, each pool held to its share.
        self.shares = SlotShares(
            settings.isolation.runnable_slots(), settings.isolation.pool_slots()
        )

    def prepare_workflow(self, defn: temporalio.workflow._Definition) -> None:
        """Nothing: the workflow's code is checked by the child that runs it."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        """An instance whose code runs in its pool's child, chosen at its first activation."""
        return PoolInstance(self, det, next(self._instances))

    def child_of(self, pool: str) -> PoolChild:
        """The pool's child, started (from the spare) if it has none; ChildDied, PoolRefused."""
        with self._lock:
            child = self._children.get(pool)
            if child is not None and child.alive:
                return child
            if child is not None:
                self._restarted(pool)
            alone = not self.how.confined and not self.isolation.shared_unconfined
            if alone and self._served not in (None, pool):
                raise PoolRefused(
                    f"this host cannot confine agent code ({self.how.shortfall or 'mode process'})"
                    f" and already runs pool {self._served!r}; pool {pool!r} would share its "
                    "process. Install bubblewrap, run a host per pool, or set [isolation] "
                    "shared_unconfined = true"
                )
            if alone:
                self._served = pool
            child = self._spare if self._spare is not None and self._spare.alive else None
            self._spare = None
            if child is None:
                child = self._new_child()
            child.assign(
                ChildSetup(
                    pool=pool, agents=self._agents, results_checked=self.check_key is not None
                )
            )
            self._children[pool] = child
            self._spare = self._new_child()
        # The pool wants a slot from now on: other pools' holders are held to their share
        # while its process starts, which may take seconds on a busy host.
        self.shares.arrives(pool)
        child.wait_ready(CHILD_START_S)
        return child

    def _new_child(self) -> PoolChild:
        return PoolChild(self.spec)

    def _restarted(self, pool: str) -> None:
        """Count a pool's process that ended unasked; PoolExhausted past the budget."""
        now = time.monotonic()
        ended = self._restarts.setdefault(pool, collections.deque())
        while ended and now - ended[0] > _RESTART_WINDOW_S:
            ended.popleft()
        if len(ended) >= _RESTARTS:
            raise PoolExhausted(
                f"pool {pool!r}: its process ended {len(ended)} times in "
                f"{_RESTART_WINDOW_S / 60:.0f} minutes; its runs wait until that is no longer so"
            )
        ended.append(now)

    def died_running(self, run_id: str, reason: str) -> int:
        """Count one more end of a pool's process while it ran `run_id`; the count so far.

        Recorded in the run's history too, for the hosts that run it next.
        """
        with self._lock:
            count = self._deaths.pop(run_id, (0, ""))[0] + 1
            self._keep_deaths(run_id, count, reason)
        if self.recorder is not None:
            self.recorder.record(run_id.rpartition("/")[0], count, reason)
        return count

    def saw_deaths(self, run_id: str, death: PoolDeath) -> None:
        """Count what `run_id`'s history says of its deaths, where it says more than this host.

        Another host charged them, or this one before a restart.
        """
        with self._lock:
            if death.count > self._deaths.get(run_id, (0, ""))[0]:
                self._deaths.pop(run_id, None)
                self._keep_deaths(run_id, death.count, death.reason)

    def _keep_deaths(self, run_id: str, count: int, reason: str) -> None:
        self._deaths[run_id] = (count, reason)
        while len(self._deaths) > _DEATHS_KEPT:
            self._deaths.popitem(last=False)

    def deaths(self, run_id: str) -> tuple[int, str]:
        """How many times `run_id`'s activations ended its pool's process, and the last why."""
        with self._lock:
            return self._deaths.get(run_id, (0, ""))

    def death(self, run_id: str) -> PoolDeath | None:
        """`deaths` as a signal says them (None if none)."""
        count, reason = self.deaths(run_id)
        return PoolDeath.said(count, reason) if count else None

    def start(self) -> None:
        """Check the agents' modules, stop idle pools from now on, and start the spare child.

        The first two go on in the background. This blocks until the spare is ready
        (seconds): call it off the event loop.
        """
        threading.Thread(target=self._check_agents, name="agent-check", daemon=True).start()
        threading.Thread(target=self._stop_idle, name="pool-idle", daemon=True).start()
        threading.Thread(target=self._publish, name="pool-report", daemon=True).start()
        threading.Thread(target=self._keep_shares, name="pool-shares", daemon=True).start()
        self.warm()

    def _keep_shares(self) -> None:
        """Have pools over their share give back held tasks that other pools wait for.

        A task given back still has its activation's time to end in its pool's process: past
        it, the process is ended and the run charged, as for any activation.
        """
        while not self._closed.wait(_REBALANCE_S):
            try:
                self._rebalance()
            except Exception:
                # The thread must outlive one bad turn.
                log.exception("the pools' shares of the slots could not be kept this time")

    def _rebalance(self) -> None:
        self.shares.rebalance()
        with self._lock:
            children = list(self._children.values())
        for child in children:
            if child.keep_weight():
                log.warning(
                    "pool %s: its process set its own CPU weight; set back to the pool's "
                    "([isolation] cpu_shares)",
                    child.pool,
                )
            if (late := child.overdue()) is not None:
                run, over = late
                self.died_running(
                    run,
                    f"an activation given back to Temporal, over its pool's share of the "
                    f"slots, did not answer {over}",
                )

    def _stop_idle(self) -> None:
        """Stop each pool's process that has answered nothing for `[isolation] idle_s`."""
        idle_s = self.isolation.idle_s
        while not self._closed.wait(min(idle_s / 4, 30.0)):
            with self._lock:
                idle = {
                    pool: child
                    for pool, child in self._children.items()
                    if child.retire_if_idle(idle_s)
                }
                for pool in idle:
                    del self._children[pool]
            for pool, child in idle.items():
                log.info("pool %s: idle for %.0f s, its process stopped", pool, idle_s)
                child.kill()

    def _check_agents(self) -> None:
        try:
            broken = broken_agents(
                self.spec, tuple(sorted(self._agents.items())), self.isolation.activation_timeout_s
            )
        except Exception as exc:
            log.exception("the agents' modules could not be checked")
            self.checked.set_exception(exc)
            return
        for name, reason in broken.items():
            log.error("agent %r cannot run, its runs will fail: %s", name, reason)
        self.checked.set_result(broken)

    def warm(self) -> None:
        """Start the spare child and wait for it: the first pool's run must not.

        A run's first activation waits for its pool's child, inside the worker's deadlock
        check (2 s), so a child must be ready before the worker polls.
        """
        with self._lock:
            if self._spare is None:
                self._spare = self._new_child()
            spare = self._spare
        spare.wait_ready(CHILD_START_S)

    def drain(self) -> None:
        """Time activations on the wall clock again, crowded or not: the host is stopping.

        The SDK waits for the activations in flight, as long as its check lets them take.
        """
        with self._lock:
            children = list(self._children.values())
        for child in children:
            child.cpu_wait.freeze()

    def close(self) -> None:
        """Stop every child."""
        self._closed.set()
        with self._lock:
            children = list(self._children.values())
            if self._spare is not None:
                children.append(self._spare)
            self._children.clear()
            self._spare = None
        for child in children:
            child.kill()

    def pools(self) -> dict[str, int | None]:
        """The pools with a child, and its process id (None if it exited)."""
        with self._lock:
            return {
                pool: child.process.pid if child.alive else None
                for pool, child in self._children.items()
            }

    def run_arrived(self, pool: str) -> None:
        """A run of `pool` is now in this host's cache."""
        with self._lock:
            self._runs[pool] += 1

    def run_left(self, pool: str) -> None:
        """A run of `pool` left this host's cache."""
        with self._lock:
            self._runs[pool] -= 1
            if self._runs[pool] <= 0:
                del self._runs[pool]

    def status(self) -> HostPools:
        """What this host says of its pools (`kernos status`)."""
        now = time.monotonic()
        with self._lock:
            children = dict(self._children)
            runs = dict(self._runs)
            restarts = {pool: len(ended) for pool, ended in self._restarts.items()}
        tasks, turned_back = self.shares.tasks(), self.shares.turned_back()
        return HostPools(
            host=socket.gethostname(),
            pid=os.getpid(),
            updated=datetime.now(UTC),
            confined=self.how.confined,
            limited=self.spec.cgrouped,
            pools=[
                PoolState(
                    pool=pool,
                    pid=child.process.pid if child.alive else None,
                    runs=runs.get(pool, 0),
                    age_s=round(now - child.since, 1),
                    idle_s=round(now - child.last_used, 1),
                    memory_bytes=child.memory_bytes(),
                    restarts=restarts.get(pool, 0),
                    tasks=tasks.get(pool, 0),
                    turned_back=turned_back.get(pool, 0),
                )
                for pool, child in sorted(children.items())
            ],
        )

    def _publish(self) -> None:
        """Keep this host's report fresh (in the state directory, in Temporal) until it closes."""
        directory = state_dir()
        while True:
            report = self.status()
            try:
                publish(directory, report)
            except OSError as exc:
                log.warning("the pools' report could not be written: %s", exc)
            if self.reports is not None:
                self.reports.send(report)
            if self._closed.wait(EVERY_S):
                break
        withdraw(directory)
        if self.reports is not None:
            self.reports.send(report, withdraw=True)


class PoolRefused(Exception):
    """The host will not run the pool: it cannot keep it apart from another."""


class PoolExhausted(Exception):
    """The pool's process kept ending: the pool waits before it gets another."""


class PoolInstance(WorkflowInstance):
    """One run's instance, as the host sees it: an id in its pool's child, and a checker."""

    def __init__(self, runner: PoolRunner, det: WorkflowInstanceDetails, instance_id: int) -> None:
        self._runner = runner
        self._det = det
        self._id = instance_id
        self._info = det.info
        #: The run across its continuations: what its pool-process deaths are counted by.
        self._run = f"{det.info.workflow_id}/{det.info.first_execution_run_id}"
        self._child: PoolChild | None = None
        self._check: CommandCheck | None = None
        self._bounds: RunBounds | None = None
        self._inbound = ActivationCheck(runner.check_key, det.info.workflow_id)
        self._pool = ""
        #: Why the host ended the run, and the error's type: every activation after is failed.
        self._ended: tuple[str, str] | None = None
        self._trace: RunTrace | None = None
        #: Whether a child has had the run's instance (its trace begins then, once).
        self._created = False

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        """Run the activation in the child, then let through only what the run may do."""
        if any(job.HasField("remove_from_cache") for job in act.jobs):
            return self._evict(act)
        if self._ended is not None:
            return _fail_run(act.run_id, *self._ended)
        # Whether the run's code must run from its start, read before the check below takes
        # out the jobs a run may not see (the death signals among them).
        from_start = not act.jobs or any(job.HasField("initialize_workflow") for job in act.jobs)
        try:
            if self._check is None:
                self._read_run(act)
            assert self._check is not None and self._bounds is not None
            if (said := deaths_in(act)) is not None:
                self._runner.saw_deaths(self._run, said)
            deaths, last = self._runner.deaths(self._run)
            if deaths >= self._runner.isolation.max_child_deaths and not act.is_replaying:
                # Decided here, before the child runs the code again: an activation that took
                # longer than the SDK's deadlock timeout (2 s) could not end the run itself.
                return self._give_up(act, deaths, last)
            self._inbound.check(act)
            self._bounds.arrived(act)
        except _Refused as exc:
            self._ended = (str(exc), REFUSED)
            return _fail_run(act.run_id, *self._ended)
        try:
            # The pool's process first: the wait for its start is not a task holding a slot.
            child = self._child
            if child is None or not child.alive:
                child = self._runner.child_of(self._pool)
        except PoolRefused as exc:
            return _fail_run(act.run_id, str(exc))
        except (ChildDied, PoolExhausted) as exc:
            # The run replays in a new child at its next workflow task.
            self._child = None
            return _fail_task(act.run_id, f"the pool's process failed: {exc}")
        # Then the pool's share, before its process hears of the run: a task turned back
        # costs that process nothing.
        shares = self._runner.shares
        turned_back = shares.starts(self._pool, self._id)
        if turned_back is not None:
            return _fail_task(act.run_id, turned_back)
        try:
            if child is not self._child:
                try:
                    self._create_in(child, from_start)
                except ChildDied as exc:
                    self._child = None
                    return _fail_task(act.run_id, f"the pool's process failed: {exc}")
            return self._in_child(act, child, self._check, self._bounds)
        finally:
            shares.ends(self._pool, self._id)

    def _in_child(
        self, act: WorkflowActivation, child: PoolChild, check: CommandCheck, bounds: RunBounds
    ) -> WorkflowActivationCompletion:
        """Run the activation in the pool's child; its completion, if the run may send it."""
        started = time.monotonic()

        def can_give_back(give_back: GiveBack) -> None:
            self._runner.shares.can_give_back(self._pool, self._id, give_back)

        try:
            answer = child.activate(
                self._id,
                act.SerializeToString(),
                self._runner.isolation.activation_timeout_s,
                can_give_back,
                self._run,
            )
        except ChildDied as exc:
            self._child = None
            return self._died(act, exc)
        except GivenBack as exc:
            # The child drops the instance itself; the run replays in a new one.
            self._child = None
            return _fail_task(act.run_id, str(exc))
        took = time.monotonic() - started
        bounded_by_address_space = not self._runner.spec.cgrouped
        if answer.kind == ERROR:
            if bounded_by_address_space and b"MemoryError" in answer.body:
                return self._over_memory(act, child)
            self._child = None
            return _fail_task(act.run_id, answer.body[-4000:].decode(errors="replace"))
        if len(answer.body) < CPU_TIME_BYTES:
            return _fail_task(act.run_id, "the pool's process sent a malformed completion")
        cpu_s, body = read_completion(answer.body)
        # A run's first activation in a process imports its agent's module: not held, however
        # long that takes (a spin there still meets the activation timeout).
        starts = any(job.HasField("initialize_workflow") for job in act.jobs)
        # Over Temporal's norm for a workflow task (2 s, which its SDK enforces where no pool's
        # host times activations), holding a slot and its pool's CPU: a run whose code does that
        # again and again is stopped like one that crashes. Only when its code was busy (as its
        # child says): on a crowded host, a task can wait long for a CPU without being the cause.
        busy = took > _SDK_DEADLOCK_S and cpu_s > HELD_S and not starts
        completion = _parsed(body)
        if completion is not None and bounded_by_address_space and _out_of_memory(completion):
            # (Its time went to filling its memory: charged once, for the limit.)
            return self._over_memory(act, child)
        if busy:
            self._runner.died_running(
                self._run,
                f"an activation held its pool's process {took:.1f} s, {cpu_s:.1f} s on a CPU",
            )
        if completion is None:
            return _fail_task(act.run_id, "the pool's process sent a malformed completion")
        # The answer is to this activation, whatever run the child named.
        completion.run_id = act.run_id
        if completion.HasField("successful"):
            commands = completion.successful.commands
            reason = check.refusal(commands)
            if reason is not None:
                return self._end(act, f"kernos refused what the agent asked for: {reason}", REFUSED)
            over = bounds.answered(act, commands, completion.ByteSize())
            if over is not None and not act.is_replaying:
                # (Replayed, the commands already went to Temporal, and passed then.)
                return self._end(act, over, RUN_LIMIT)
            for command in commands:
                if command.HasField("schedule_activity"):
                    self._inbound.scheduled(command.schedule_activity)
                    if self._trace is not None and not act.is_replaying:
                        self._trace.activity(command.schedule_activity)
                    else:
                        command.schedule_activity.headers.clear()
                elif command.WhichOneof("variant") in _ENDS_RUN:
                    if command.HasField("fail_workflow_execution"):
                        without_payloads(command.fail_workflow_execution.failure)
                    self._end_trace()
                    if command.HasField("continue_as_new_workflow_execution"):
                        write_carry(
                            command.continue_as_new_workflow_execution,
                            HostCarry(
                                deaths=self._runner.death(self._run),
                                left_running=bounds.left_running(act),
                            ),
                        )
        return completion

    def _end(self, act: WorkflowActivation, reason: str, kind: str) -> WorkflowActivationCompletion:
        """Fail the run, `reason` as a `kind` error; every activation after fails it again."""
        self._ended = (reason, kind)
        log.warning("run %s: %s", self._info.workflow_id, reason)
        self._end_trace()
        return _fail_run(act.run_id, *self._ended)

    def _died(self, act: WorkflowActivation, exc: ChildDied) -> WorkflowActivationCompletion:
        """The pool's process ended while it ran this activation: replay, or fail the run.

        Replayed, a run whose code ends its process (a crash, a limit, a loop that never
        answers) would end it again and again: after `[isolation] max_child_deaths` the run
        fails, naming what ended the process the last time.
        """
        if not exc.counted:
            return _fail_task(act.run_id, f"the pool's process was replaced: {exc}")
        deaths = self._runner.died_running(self._run, str(exc))
        if deaths < self._runner.isolation.max_child_deaths or act.is_replaying:
            return _fail_task(act.run_id, f"the pool's process failed: {exc}")
        return self._give_up(act, deaths, str(exc))

    def _over_memory(
        self, act: WorkflowActivation, child: PoolChild
    ) -> WorkflowActivationCompletion:
        """The run's code met the address-space bound that stands in for a memory cgroup.

        Its pool's process is ended, as the cgroup would have ended it, and the run charged.
        (The child could claim this falsely only against its own run.)
        """
        self._child = None
        child.end("another run's activation went over the pool's memory limit")
        memory_mib = self._runner.spec.limits.memory_mib
        return self._died(
            act,
            ChildDied(
                f"the pool's process went over its memory limit ({memory_mib} MiB, as address "
                "space, without cgroups)",
                limit="memory",
            ),
        )

    def _give_up(
        self, act: WorkflowActivation, deaths: int, last: str
    ) -> WorkflowActivationCompletion:
        return self._end(
            act,
            f"the run's code broke its pool's process {deaths} times (ended it, or kept it "
            f"busy past {_SDK_DEADLOCK_S:.0f} s in one task); the last time: {last}",
            LIMIT,
        )

    def _end_trace(self) -> None:
        if self._trace is not None:
            self._trace.end()
            self._trace = None

    def _evict(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        """Let the child drop the instance; the host's is dropped by the worker."""
        if self._check is not None:
            self._runner.run_left(self._pool)
        self._end_trace()
        child, self._child = self._child, None
        if child is not None and child.alive:
            try:
                child.activate(self._id, act.SerializeToString(), _EVICTION_S)
            except ChildDied as exc:
                log.warning("run %s: evicting it: %s", self._info.workflow_id, exc)
                if exc.limit is not None and exc.counted:
                    # Its own eviction did not answer: charged like any activation.
                    self._runner.died_running(self._run, str(exc))
        completion = WorkflowActivationCompletion(run_id=act.run_id)
        completion.successful.SetInParent()
        return completion

    def _read_run(self, act: WorkflowActivation) -> None:
        """Find the run's input and pool in its first activation."""
        run = _run_input(act)
        self._check = CommandCheck(run, self._info.task_queue)
        start = next(j.initialize_workflow for j in act.jobs if j.HasField("initialize_workflow"))
        carry = carried(start)
        if carry.deaths is not None:
            self._runner.saw_deaths(self._run, carry.deaths)
        self._bounds = RunBounds(run.limits, carry.left_running)
        self._pool = run.pool or run.spec.tenant
        self._runner.run_arrived(self._pool)
        # A run that replays here (it left a cache, or another host) made its workflow span
        # the first time; its new syscalls' spans still join the run's trace.
        self._trace = RunTrace(start.headers, self._info.workflow_type, resumed=act.is_replaying)

    def _create_in(self, child: PoolChild, from_start: bool) -> None:
        """Give `child` the run's spec (ChildDied if the run must replay there from its start)."""
        if self._created and not from_start:
            # A new child knows nothing of this run: it must replay from the start.
            raise ChildDied("the run's pool process was replaced; replaying")
        if not self._created and self._trace is not None:
            self._trace.begin()
        self._created = True
        self._child = child
        det = self._det
        child.create(
            self._id,
            InstanceSpec(
                workflow=(det.defn.cls.__module__, det.defn.cls.__qualname__),
                # Without what the run's starter could write into it.
                info=dataclasses.replace(det.info, headers={}, raw_memo={}),
                randomness_seed=det.randomness_seed,
                last_completion_result=det.last_completion_result.SerializeToString(),
                last_failure=det.last_failure.SerializeToString() if det.last_failure else None,
                disable_eager_activity_execution=det.disable_eager_activity_execution,
            ),
        )

    def get_serialization_context(self, command_info: Any) -> Any:
        """The workflow's own context, as the SDK's instance gives it."""
        return temporalio.converter.WorkflowSerializationContext(
            namespace=self._info.namespace, workflow_id=self._info.workflow_id
        )

    def get_external_store_context(self, command_info: Any) -> Any:
        """The workflow's own store context."""
        return temporalio.converter.StorageDriverStoreContext(
            target=temporalio.converter.StorageDriverWorkflowInfo(
                id=self._info.workflow_id,
                run_id=self._info.run_id,
                type=self._info.workflow_type,
                namespace=self._info.namespace,
            )
        )

    def get_info(self) -> temporalio.workflow.Info:
        """The run's info."""
        return self._info


class _Refused(Exception):
    """The run's first activation does not carry a run the kernel admitted."""


def _run_input(act: WorkflowActivation) -> RunInput:
    for job in act.jobs:
        if job.HasField("initialize_workflow"):
            arguments = job.initialize_workflow.arguments
            if len(arguments) != 1:
                raise _Refused("the run was started without the kernel's input")
            try:
                return RunInput.model_validate_json(arguments[0].data)
            except ValueError as exc:
                raise _Refused(f"the run's input is not one the kernel writes: {exc}") from exc
    raise _Refused("the run's first activation does not start it")


def without_payloads(failure: Failure) -> None:
    """Drop the payloads a run's failure carries down its chain, keeping its text.

    Their encoding is agent code's to choose: one no converter knows would make every client
    that waits for the run's result fail to read how it ended.
    """
    while True:
        failure.ClearField("encoded_attributes")
        kind = failure.WhichOneof("failure_info")
        if kind is not None:
            info = getattr(failure, kind)
            for field in ("details", "last_heartbeat_details"):
                if field in info.DESCRIPTOR.fields_by_name:
                    info.ClearField(field)
        if not failure.HasField("cause"):
            return
        failure = failure.cause


def _fail_run(run_id: str, reason: str, kind: str = REFUSED) -> WorkflowActivationCompletion:
    """A completion that ends the run, failed, with `reason` as a `kind` error (not retried)."""
    completion = WorkflowActivationCompletion(run_id=run_id)
    failure = Failure(
        message=reason,
        application_failure_info=ApplicationFailureInfo(type=kind, non_retryable=True),
    )
    completion.successful.commands.append(
        WorkflowCommand(fail_workflow_execution=FailWorkflowExecution(failure=failure))
    )
    return completion


def _parsed(body: bytes) -> WorkflowActivationCompletion | None:
    """A child's completion, or None if its bytes are not one."""
    completion = WorkflowActivationCompletion()
    try:
        completion.ParseFromString(body)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, from hostile bytes
        return None
    return completion


def _out_of_memory(completion: WorkflowActivationCompletion) -> bool:
    """Whether the task, or the run, failed for `MemoryError` (or an error it caused)."""
    if completion.HasField("failed"):
        failures = [completion.failed.failure]
    else:
        failures = [
            command.fail_workflow_execution.failure
            for command in completion.successful.commands
            if command.HasField("fail_workflow_execution")
        ]
    for failure in failures:
        for _ in range(16):
            if failure.application_failure_info.type == "MemoryError":
                return True
            if not failure.HasField("cause"):
                break
            failure = failure.cause
    return False


def _fail_task(run_id: str, reason: str) -> WorkflowActivationCompletion:
    """A failed workflow task: Temporal retries it, replaying the run."""
    completion = WorkflowActivationCompletion(run_id=run_id)
    completion.failed.failure.message = reason
    return completion
