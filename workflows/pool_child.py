"""A pool's child: it runs agents' workflow code for its host, confined, and nothing else.

`python -m kernos.workflows.pool_child` reads frames on stdin and answers on the descriptor
that was stdout (stdout itself then goes to stderr, so an agent's `print` cannot garble the
pipe). Each instance is Temporal's ordinary sandboxed workflow instance; agent modules are
imported inside it, by the run that uses them. The child holds no credential and no client:
what it answers goes to the host, which checks it before Temporal sees any of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import logging
import os
import pickle
import sys
import threading
import time
import traceback
from typing import IO, Any

import temporalio.api.common.v1
import temporalio.api.failure.v1
import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import (
    RemoveFromCache,
    WorkflowActivation,
    WorkflowActivationJob,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowInterceptorClassInput,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from kernos.kernel.errors import ConfigError
from kernos.kernel.result_seal import BY_HOST, SealCheckInterceptor
from kernos.workflows import agent_registry
from kernos.workflows.agent_run import AgentRun  # noqa: F401 - imported before any activation
from kernos.workflows.agent_worker import load_lazy_packages, sandbox_runner
from kernos.workflows.pool_wire import (
    ACTIVATE,
    COMPLETION,
    CREATE,
    DROP,
    ERROR,
    LOADED,
    READY,
    SETUP,
    ChildSetup,
    FrameError,
    FrameWriter,
    InstanceSpec,
    completion_body,
    receive,
)

log = logging.getLogger(__name__)

#: Activations run at once, as the SDK's worker runs them (it allows 500): one blocked in
#: agent code must not hold up the pool's other runs behind a small pool of threads.
ACTIVATION_THREADS = 100


class Child:
    """The instances of one pool, answering the host's activations."""

    def __init__(
        self, setup: ChildSetup, writer: FrameWriter, runner: SandboxedWorkflowRunner
    ) -> None:
        self.setup = setup
        self.writer = writer
        self.runner = runner
        self.instances: dict[int, WorkflowInstance] = {}
        #: Why an instance could not be made, until its activation reports it.
        self.broken: dict[int, str] = {}
        #: Each instance's run, the instances with an activation running, and those of them
        #: the host dropped meanwhile.
        self.runs: dict[int, str] = {}
        self.busy: set[int] = set()
        self.dropped: set[int] = set()
        self.lock = threading.Lock()
        self.interceptors = []
        if setup.results_checked:
            seal = SealCheckInterceptor(BY_HOST)
            self.interceptors.append(
                seal.workflow_interceptor_class(WorkflowInterceptorClassInput({}))
            )
        agent_registry.declare(setup.agents)

    def create(self, instance_id: int, spec: InstanceSpec) -> None:
        """Make an instance; on the event loop's thread, as the SDK's worker makes them."""
        try:
            self.instances[instance_id] = self._make(spec)
        except Exception as exc:  # noqa: BLE001 - reported at the instance's activation
            self.broken[instance_id] = "".join(traceback.format_exception(exc, limit=8))

    def _make(self, spec: InstanceSpec) -> WorkflowInstance:
        module, qualname = spec.workflow
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        last_result = temporalio.api.common.v1.Payloads()
        last_result.ParseFromString(spec.last_completion_result)
        last_failure = None
        if spec.last_failure is not None:
            last_failure = temporalio.api.failure.v1.Failure()
            last_failure.ParseFromString(spec.last_failure)
        return self.runner.create_instance(
            WorkflowInstanceDetails(
                payload_converter_factory=pydantic_data_converter.payload_converter_class,
                failure_converter_class=pydantic_data_converter.failure_converter_class,
                interceptor_classes=self.interceptors,
                defn=temporalio.workflow._Definition.must_from_class(cls),
                info=spec.info,
                randomness_seed=spec.randomness_seed,
                extern_functions={},
                disable_eager_activity_execution=spec.disable_eager_activity_execution,
                worker_level_failure_exception_types=[],
                patch_activation_callback=None,
                last_completion_result=last_result,
                last_failure=last_failure,
            )
        )

    def begins(self, body: bytes) -> None:
        """An activation of the instance named in `body` is on its way to a thread."""
        with self.lock:
            self.busy.add(int.from_bytes(body[:8], "big"))

    def activate(self, request: int, body: bytes) -> None:
        """Run one activation and send its completion (or the error that stopped it)."""
        instance_id = int.from_bytes(body[:8], "big")
        try:
            activation = WorkflowActivation()
            activation.ParseFromString(body[8:])
            self.runs[instance_id] = activation.run_id
            instance = self.instances.get(instance_id)
            if instance is None:
                broken = self.broken.pop(instance_id, "the host named no instance of this child")
                raise RuntimeError(broken)
            started = time.thread_time()
            completion = instance.activate(activation)
            cpu_s = time.thread_time() - started
            if any(job.HasField("remove_from_cache") for job in activation.jobs):
                self.instances.pop(instance_id, None)
                self.runs.pop(instance_id, None)
            body = completion_body(cpu_s, completion.SerializeToString())
            self.writer.send(COMPLETION, request, body)
        except Exception:  # noqa: BLE001 - the host turns it into a failed workflow task
            self.instances.pop(instance_id, None)
            self.runs.pop(instance_id, None)
            self.writer.send(ERROR, request, traceback.format_exc(limit=8).encode())
        finally:
            with self.lock:
                self.busy.discard(instance_id)
                dropped = instance_id in self.dropped
                self.dropped.discard(instance_id)
            if dropped:
                self._evict(instance_id)

    def drop(self, instance_id: int) -> None:
        """The host gave the instance's task back: evict it now, or when its activation ends."""
        with self.lock:
            if instance_id in self.busy:
                self.dropped.add(instance_id)
                return
        self._evict(instance_id)

    def _evict(self, instance_id: int) -> None:
        """Evict an instance as the SDK's worker does (its coroutines end), answering no one."""
        instance = self.instances.pop(instance_id, None)
        run_id = self.runs.pop(instance_id, "")
        if instance is None:
            return
        eviction = WorkflowActivation(
            run_id=run_id,
            jobs=[
                WorkflowActivationJob(
                    remove_from_cache=RemoveFromCache(
                        message="its task was given back to Temporal",
                        reason=RemoveFromCache.EvictionReason.LANG_REQUESTED,
                    )
                )
            ],
        )
        try:
            instance.activate(eviction)
        except Exception:
            # Nobody waits for this eviction's outcome.
            log.warning("evicting a dropped instance failed", exc_info=True)


def check(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Import each agent's module, in the order given, and answer for each as it is done.

    The host's start-up check (`agent_check`): one frame per agent (request: its index),
    READY or ERROR with why, so that a module that hangs or ends the process is named by
    where the answers stop.
    """
    writer = FrameWriter(stdout)
    setup: ChildSetup = pickle.loads(receive(stdin).body)
    for index, path in enumerate(setup.agents.values()):
        try:
            agent_registry.resolve(path)
        except ConfigError as exc:
            writer.send(ERROR, index, str(exc).encode())
        except Exception as exc:  # noqa: BLE001 - module-level code of an agent failed
            writer.send(ERROR, index, f"importing {path!r} raised {exc!r}".encode())
        else:
            writer.send(READY, index, b"")


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """Answer the host until it closes the pipe."""
    writer = FrameWriter(stdout)
    # Started, with the kernel and the SDK imported: a spare, until the host names its pool.
    writer.send(READY, 0, b"")
    # Agents' code, not kernel workers', imports LangChain and the like (about a second): loaded
    # while the process waits for its pool, not once a pool's first run waits for it. After
    # READY, which the host's start timeout waits for: a hundred processes started at once on
    # a small host must not all spend it on this before they answer.
    load_lazy_packages()
    runner = sandbox_runner()
    # Before this, the process did the kernel's work, not a run's: a first activation sent
    # meanwhile is not charged for that time.
    writer.send(LOADED, 0, b"")
    first = receive(stdin)
    if first.kind != SETUP:
        raise FrameError("the host's first frame is not the setup")
    child = Child(pickle.loads(first.body), writer, runner)
    asyncio.run(_serve(child, stdin))


async def _serve(child: Child, stdin: IO[bytes]) -> None:
    # As in the SDK's worker: instances are made on the event loop's thread, and activated
    # in a pool of threads.
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(ACTIVATION_THREADS, "activation") as executor:
        while True:
            try:
                frame = await loop.run_in_executor(None, receive, stdin)
            except FrameError:
                return
            if frame.kind == CREATE:
                child.create(frame.request, pickle.loads(frame.body))
            elif frame.kind == ACTIVATE:
                child.begins(frame.body)
                loop.run_in_executor(executor, child.activate, frame.request, frame.body)
            elif frame.kind == DROP:
                loop.run_in_executor(executor, child.drop, frame.request)


def main() -> None:
    """Entry point: the pipe is stdin and the original stdout."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    pipe_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    (check if "--check" in sys.argv[1:] else serve)(sys.stdin.buffer, pipe_out)


if __name__ == "__main__":
    main()
