"""Where and in which order syscalls run: task queues and Temporal priority.

This is the FIFO policy: one queue per model pool (`llm.<model>`), pulled by each instance's
worker with that instance's slots, ordered by the run's priority key (1 first).
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.common import Priority

from kernos.kernel.syscalls import RunInput


@dataclass(frozen=True)
class Dispatch:
    """Where one syscall goes and how urgently."""

    task_queue: str
    priority: Priority


def llm_task_queue(prefix: str, model: str) -> str:
    """The pool queue of a model."""
    return f"{prefix}{model}"


def dispatch_llm(run: RunInput, model: str) -> Dispatch:
    """Dispatch an LLM syscall of a run to its model's pool."""
    return Dispatch(
        task_queue=llm_task_queue(run.llm_queue_prefix, model),
        priority=Priority(priority_key=run.spec.priority),
    )
