"""Where and in which order syscalls run: task queues and Temporal's priority and fairness.

One queue per model pool (`llm.<model>`), pulled by each instance's worker with that instance's
slots, so a busy instance takes no more work. Within the queue, the run's policy decides order,
with Temporal's own semantics (the kernel queues use one partition, so they hold queue-wide):

- `fifo`: every task at the default priority, in arrival order;
- `rr`: as `fifo`, but a generation yields its slot at the end of each time slice (the kernel's
  `scheduler.slice_tokens`), and its continuation queues again at the back;
- `priority`: the run's priority key, 1 first (Temporal's meaning), then arrival order;
- `fair`: priority first, then tenants share dispatches by their fairness weights (the tenant
  is the fairness key), so one tenant's backlog cannot starve another's.
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


def priority_of(run: RunInput) -> Priority:
    """The Temporal priority of a run's syscalls under its policy."""
    policy = run.scheduling.policy
    if policy in ("fifo", "rr"):
        return Priority.default
    if policy == "priority":
        return Priority(priority_key=run.spec.priority)
    return Priority(
        priority_key=run.spec.priority,
        fairness_key=run.spec.tenant,
        fairness_weight=run.scheduling.fairness_weight,
    )


def dispatch_llm(run: RunInput, model: str) -> Dispatch:
    """Dispatch an LLM syscall of a run to its model's pool."""
    return Dispatch(
        task_queue=llm_task_queue(run.llm_queue_prefix, model), priority=priority_of(run)
    )
