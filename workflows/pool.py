"""Pools: agent code runs in a confined child per pool, driven by a trusted host.

The host is an ordinary Temporal worker for `AgentRun` (its polling, sticky queues, replay and
Temporal connection are kernos's code), whose workflow runner hands each activation, through
the SDK's `WorkflowRunner` seam, over a pipe to the child of the run's pool, checks every
syscall's answer before the child sees it (`result_check.ResultCheck`) and every command the
child answers before Temporal sees it (`commands.CommandCheck`). A run's pool
comes from its input, which the kernel wrote at admission (`RunInput.pool`, else its tenant).

The child (`pool_child`) holds no credential, no Temporal client and, under bubblewrap, reaches
no network, file or process outside its own view (`kernos.infra.confine`). One child serves a
pool's runs; a spare one waits, already started, so that a new pool costs no interpreter start.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import io
import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import temporalio.converter
import temporalio.workflow
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_commands import FailWorkflowExecution, WorkflowCommand
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner

from kernos.infra import confine
from kernos.kernel.config import IsolationSettings, Settings, state_dir
from kernos.kernel.errors import ConfigError
from kernos.kernel.result_seal import check_key
from kernos.kernel.syscalls import RunInput
from kernos.workflows.commands import CommandCheck
from kernos.workflows.pool_tracing import RunTrace
from kernos.workflows.pool_wire import (
    ACTIVATE,
    COMPLETION,
    CREATE,
    ERROR,
    READY,
    SETUP,
    ChildSetup,
    Frame,
    FrameError,
    FrameWriter,
    InstanceSpec,
    receive,
)
from kernos.workflows.result_check import ResultCheck

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
#: The largest answer a child may send: a completion's payloads are 2 MiB each at most, and
#: Temporal takes no more than 4 MiB in one message.
MAX_ANSWER = 16 * 1024 * 1024
#: Lines of a child's stderr that reach the host's log, and how long each may be.
MAX_LOG_LINES = 1000
MAX_LOG_LINE = 2000
#: How long a new child may take to start (import the kernel and Temporal's SDK).
CHILD_START_S = 60.0


@dataclass(frozen=True)
class Confinement:
    """How this host confines its pools' children, and why not if it does not."""

    mode: Literal["bwrap", "process"]
    shortfall: str | None = None
    """Why bubblewrap is not used where `auto` wanted it."""

    @property
    def confined(self) -> bool:
        """Whether children are confined by the operating system."""
        return self.mode == "bwrap"


def confinement(isolation: IsolationSettings) -> Confinement:
    """The confinement `[isolation] mode` asks for, as this host can give it (ConfigError)."""
    if isolation.mode == "process":
        return Confinement("process")
    shortfall = confine.bwrap_works()
    if shortfall is None:
        return Confinement("bwrap")
    if isolation.mode == "bwrap":
        raise ConfigError(
            f"[isolation] mode = 'bwrap', but {shortfall}: install bubblewrap "
            "(`apt-get install bubblewrap`) or choose another mode"
        )
    return Confinement("process", shortfall)


def _hidden(settings: Settings) -> list[Path]:
    """What a child must not see, should its view include it: state, settings, spans, anchors."""
    hidden = [state_dir(), Path(".kernos"), Path(os.environ.get("KERNOS_CONFIG", "kernos.toml"))]
    hidden += [path for path in (settings.audit.anchor_sink, settings.telemetry.spans_file) if path]
    return [path for path in hidden if path.exists()]


def _child_command(
    how: Confinement,
    agents: tuple[str, ...],
    hidden: tuple[Path, ...],
    *arguments: str,
    seccomp_fd: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a child: bubblewrap's view, or a plain process."""
    modules = [path.partition(":")[0] for path in agents]
    roots, python_path = confine.import_roots(modules)
    environment = {
        "PYTHONPATH": os.pathsep.join(str(path) for path in python_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    command = [sys.executable, "-m", "kernos.workflows.pool_child", *arguments]
    if not how.confined:
        return command, environment
    return confine.bwrap_argv(roots, hidden, environment, seccomp_fd) + command, {}


@contextlib.contextmanager
def _seccomp_fd(how: Confinement) -> Iterator[int | None]:
    """The seccomp filter for one confined child's start, or None for a plain process."""
    if not how.confined:
        yield None
        return
    with confine.seccomp_fd() as fd:
        yield fd


@functools.cache
def _agents_checked(
    how: Confinement, agents: tuple[tuple[str, str], ...], hidden: tuple[Path, ...]
) -> str | None:
    """Why the agents' paths do not import (in a child like a pool's), or None if they do."""
    paths = tuple(path for _, path in agents)
    setup = ChildSetup(pool="", agents=dict(agents), results_checked=False)
    frame = FrameWriter.frame(SETUP, 0, pickle.dumps(setup))
    try:
        with _seccomp_fd(how) as fd:
            argv, environment = _child_command(how, paths, hidden, "--check", seccomp_fd=fd)
            done = subprocess.run(
                argv, input=frame, capture_output=True, env=environment, cwd="/", timeout=120,
                pass_fds=() if fd is None else (fd,),
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "importing the agents' modules took over 120 s"
    try:
        answer = receive(io.BytesIO(done.stdout))
    except FrameError:
        return f"the agents' modules could not be checked: {done.stderr.decode()[-2000:]}"
    return None if answer.kind == READY else answer.body.decode(errors="replace")[:4000]


class PoolChild:
    """One child process and the pipe to it; activations from many threads, multiplexed."""

    def __init__(self, how: Confinement, agents: tuple[str, ...], hidden: tuple[Path, ...]) -> None:
        with _seccomp_fd(how) as fd:
            argv, environment = _child_command(how, agents, hidden, seccomp_fd=fd)
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=environment,
                cwd="/",
                start_new_session=True,
                pass_fds=() if fd is None else (fd,),
            )
        assert self.process.stdin and self.process.stdout and self.process.stderr
        # Frames go out through a queue and a thread of their own: a child that stops reading
        # blocks that thread only, never a caller (who waits with a deadline).
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._stdout = self.process.stdout
        self._requests = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Frame]] = {}
        self._lock = threading.Lock()
        self._ready = concurrent.futures.Future[None]()
        self.pool: str | None = None
        for target, name in ((self._read, "reader"), (self._write, "writer"), (self._log, "log")):
            threading.Thread(target=target, name=f"pool-child-{name}", daemon=True).start()

    def assign(self, setup: ChildSetup) -> None:
        """Make this child the pool's: from now on it serves only `setup.pool`'s runs."""
        self.pool = setup.pool
        self._send(SETUP, 0, pickle.dumps(setup))

    def _send(self, kind: bytes, request: int, body: bytes) -> None:
        self._outbox.put(FrameWriter.frame(kind, request, body))

    def _write(self) -> None:
        assert self.process.stdin is not None
        writer = self.process.stdin
        while (data := self._outbox.get()) is not None:
            try:
                writer.write(data)
                writer.flush()
            except (OSError, ValueError):
                self.kill()
                return

    def _log(self) -> None:
        """The child's stderr, into this process's log, prefixed and cut short.

        At most `MAX_LOG_LINES` lines of `MAX_LOG_LINE` bytes: a child cannot fill the disk.
        """
        assert self.process.stderr is not None
        for lines, line in enumerate(self.process.stderr, start=1):
            if lines <= MAX_LOG_LINES:
                text = line[:MAX_LOG_LINE].decode(errors="replace").rstrip()
                log.warning("pool %s says: %s", self.pool or "(spare)", text)
            elif lines == MAX_LOG_LINES + 1:
                log.warning("pool %s: further output from its process dropped", self.pool)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the child has started (ChildDied if it did not)."""
        try:
            self._ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self.kill()
            raise ChildDied(f"the pool's process did not start within {timeout:.0f} s") from None

    def create(self, instance_id: int, spec: InstanceSpec) -> None:
        """Tell the child about an instance; it makes it at its first activation."""
        self._send(CREATE, instance_id, pickle.dumps(spec))

    def activate(self, instance_id: int, activation: bytes, timeout: float) -> Frame:
        """Send an activation and wait for the child's answer (ChildDied on none)."""
        request = next(self._requests)
        answer = concurrent.futures.Future[Frame]()
        with self._lock:
            if self.process.poll() is not None:
                raise ChildDied("the pool's process has exited")
            self._pending[request] = answer
        try:
            self._send(ACTIVATE, request, instance_id.to_bytes(8, "big") + activation)
            return answer.result(timeout)
        except FrameError as exc:
            raise ChildDied(f"the activation could not be sent: {exc}") from exc
        except concurrent.futures.TimeoutError:
            self.kill()
            raise ChildDied(f"the pool's process did not answer within {timeout:.0f} s") from None
        finally:
            with self._lock:
                self._pending.pop(request, None)

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Stop the child at once; activations waiting on it fail."""
        self._outbox.put(None)
        if self.alive:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("pool %s: its process did not exit after SIGKILL", self.pool)

    def _read(self) -> None:
        """Hand each answer to the activation waiting for it; anything else ends the child."""
        reason = "the pool's process exited"
        try:
            while True:
                frame = receive(self._stdout, MAX_ANSWER)
                if frame.kind == READY and not self._ready.done():
                    self._ready.set_result(None)
                    continue
                with self._lock:
                    waiting = self._pending.get(frame.request)
                if frame.kind not in (COMPLETION, ERROR) or waiting is None or waiting.done():
                    reason = "the pool's process sent an answer to nothing it was asked"
                    self.kill()
                    break
                waiting.set_result(frame)
        except (FrameError, OSError, ValueError):
            pass
        if self.alive:
            self.kill()
        with self._lock:
            waiting_now = list(self._pending.values())
        if not self._ready.done():
            self._ready.set_exception(ChildDied(reason))
        for future in waiting_now:
            if not future.done():
                future.set_exception(ChildDied(reason))


class ChildDied(Exception):
    """A pool's child exited, broke the protocol, or stopped answering."""


class PoolRunner(WorkflowRunner):
    """A workflow runner that runs each run's code in its pool's confined child."""

    def __init__(self, settings: Settings) -> None:
        self.isolation = settings.isolation
        self.how = confinement(self.isolation)
        if self.how.shortfall is not None:
            log.warning(
                "AGENT CODE IS NOT CONFINED on this host (%s): one pool only, unless "
                "[isolation] shared_unconfined says isolation is off",
                self.how.shortfall,
            )
        self._agents = dict(settings.agents)
        self._hidden = tuple(_hidden(settings))
        key = settings.temporal.check_key_hex()
        #: The key this host checks syscall results with before a child sees them.
        self.check_key = check_key(key) if key is not None else None
        self._children: dict[str, PoolChild] = {}
        self._spare: PoolChild | None = None
        self._lock = threading.Lock()
        self._instances = itertools.count(1)

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
            served = [name for name, other in self._children.items() if other.alive]
            if served and not self.how.confined and not self.isolation.shared_unconfined:
                raise PoolRefused(
                    f"this host cannot confine agent code ({self.how.shortfall or 'mode process'})"
                    f" and already runs pool {served[0]!r}; pool {pool!r} would share its "
                    "process. Install bubblewrap, run a host per pool, or set [isolation] "
                    "shared_unconfined = true"
                )
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
        child.wait_ready(CHILD_START_S)
        return child

    def _new_child(self) -> PoolChild:
        return PoolChild(self.how, tuple(self._agents.values()), self._hidden)

    def check_agents(self) -> None:
        """Import every agent's module in a throwaway child; ConfigError names what failed."""
        failed = _agents_checked(self.how, tuple(sorted(self._agents.items())), self._hidden)
        if failed is not None:
            raise ConfigError(failed)

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

    def close(self) -> None:
        """Stop every child."""
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


class PoolRefused(Exception):
    """The host will not run the pool: it cannot keep it apart from another."""


class PoolInstance(WorkflowInstance):
    """One run's instance, as the host sees it: an id in its pool's child, and a checker."""

    def __init__(self, runner: PoolRunner, det: WorkflowInstanceDetails, instance_id: int) -> None:
        self._runner = runner
        self._det = det
        self._id = instance_id
        self._info = det.info
        self._child: PoolChild | None = None
        self._check: CommandCheck | None = None
        self._results: ResultCheck | None = None
        if runner.check_key is not None:
            self._results = ResultCheck(runner.check_key, det.info.workflow_id)
        self._pool = ""
        self._ended: str | None = None
        self._trace: RunTrace | None = None

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        """Run the activation in the child, then let through only what the run may do."""
        if any(job.HasField("remove_from_cache") for job in act.jobs):
            return self._evict(act)
        if self._ended is not None:
            return _fail_run(act.run_id, self._ended)
        try:
            if self._child is None or not self._child.alive:
                self._start(act)
            assert self._child is not None and self._check is not None
            if self._results is not None:
                self._results.check(act)
            answer = self._child.activate(
                self._id, act.SerializeToString(), self._runner.isolation.activation_timeout_s
            )
        except _Refused as exc:
            self._ended = str(exc)
            return _fail_run(act.run_id, self._ended)
        except PoolRefused as exc:
            return _fail_run(act.run_id, str(exc))
        except ChildDied as exc:
            # The run replays in a new child at its next workflow task.
            self._child = None
            return _fail_task(act.run_id, f"the pool's process failed: {exc}")
        if answer.kind == ERROR:
            self._child = None
            return _fail_task(act.run_id, answer.body[-4000:].decode(errors="replace"))
        completion = WorkflowActivationCompletion()
        try:
            completion.ParseFromString(answer.body)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError, from hostile bytes
            return _fail_task(act.run_id, "the pool's process sent a malformed completion")
        # The answer is to this activation, whatever run the child named.
        completion.run_id = act.run_id
        if completion.HasField("successful"):
            commands = completion.successful.commands
            reason = self._check.refusal(commands)
            if reason is not None:
                self._ended = f"kernos refused what the agent asked for: {reason}"
                log.warning("run %s: %s", self._info.workflow_id, self._ended)
                self._end_trace()
                return _fail_run(act.run_id, self._ended)
            for command in commands:
                if command.HasField("schedule_activity"):
                    if self._results is not None:
                        self._results.scheduled(command.schedule_activity)
                    if self._trace is not None and not act.is_replaying:
                        self._trace.activity(command.schedule_activity)
                    else:
                        command.schedule_activity.headers.clear()
                elif command.WhichOneof("variant") in _ENDS_RUN:
                    self._end_trace()
        return completion

    def _end_trace(self) -> None:
        if self._trace is not None:
            self._trace.end()
            self._trace = None

    def _evict(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        """Let the child drop the instance; the host's is dropped by the worker."""
        self._end_trace()
        child, self._child = self._child, None
        if child is not None and child.alive:
            try:
                child.activate(self._id, act.SerializeToString(), _EVICTION_S)
            except ChildDied as exc:
                log.warning("run %s: evicting it: %s", self._info.workflow_id, exc)
        completion = WorkflowActivationCompletion(run_id=act.run_id)
        completion.successful.SetInParent()
        return completion

    def _start(self, act: WorkflowActivation) -> None:
        """Find the run's input and pool in its first activation, and give the child the spec."""
        if self._check is None:
            run = _run_input(act)
            self._check = CommandCheck(run, self._info.task_queue)
            self._pool = run.pool or run.spec.tenant
            if not act.is_replaying:
                headers = next(
                    job.initialize_workflow.headers
                    for job in act.jobs
                    if job.HasField("initialize_workflow")
                )
                self._trace = RunTrace(headers, self._info.workflow_type)
        elif act.jobs and not any(job.HasField("initialize_workflow") for job in act.jobs):
            # A new child knows nothing of this run: it must replay from the start.
            raise ChildDied("the run's pool process was replaced; replaying")
        self._child = self._runner.child_of(self._pool)
        det = self._det
        self._child.create(
            self._id,
            InstanceSpec(
                workflow=(det.defn.cls.__module__, det.defn.cls.__qualname__),
                info=det.info,
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


def _fail_run(run_id: str, reason: str) -> WorkflowActivationCompletion:
    """A completion that ends the run, failed, with `reason` (not retried)."""
    completion = WorkflowActivationCompletion(run_id=run_id)
    failure = Failure(
        message=reason,
        application_failure_info=ApplicationFailureInfo(type=REFUSED, non_retryable=True),
    )
    completion.successful.commands.append(
        WorkflowCommand(fail_workflow_execution=FailWorkflowExecution(failure=failure))
    )
    return completion


def _fail_task(run_id: str, reason: str) -> WorkflowActivationCompletion:
    """A failed workflow task: Temporal retries it, replaying the run."""
    completion = WorkflowActivationCompletion(run_id=run_id)
    completion.failed.failure.message = reason
    return completion
