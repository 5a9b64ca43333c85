"""Where and in which order syscalls run: task queues and Temporal's priority and fairness.

One queue per model pool (`llm.<model>`), pulled by each instance's worker with that instance's
slots, so a busy instance takes no more work. Within the queue, the run's policy decides order,
with Temporal's own semantics (the kernel queues use one partition, so they hold queue-wide):

- `fifo`: every task at the default priority, in arrival order;
- `rr`: as `fifo`, but a generation yields its slot at the end of each time slice (the kernel's
  `scheduler.slice_tokens`), and its continuation queues again at the back;
- `priority`: the run's priority key, 1 first (Temporal's meaning), then arrival order;
- `fair`: priority first, then tenants share dispatches by their fairness weights (the tenant
  is the fairness key), so one tenant's backlog cannot starve another's. With
  `scheduler.fair_in_tokens` (the default) generations are also cut at each time slice, so a
  dispatch is at most a slice and the share is judged in output tokens, not in calls.

Cache affinity (`[scheduler] affinity_s` > 0): a run's next LLM syscall first goes to the
queue of the instance that served its previous one (`<pool>@<instance>`, polled by that
instance's worker within the same slots), where the server still holds the run's prefix in its
cache; if that instance does not start it within `affinity_s`, it goes to the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import Priority

from kernos.kernel.syscalls import RunInput, RunSpec, Scheduling


@dataclass(frozen=True)
class Dispatch:
    """Where one syscall goes and how urgently."""

    task_queue: str
    priority: Priority
    schedule_to_start: timedelta | None = None
    """Set for an affinity queue: how long to wait there before going to the pool."""


def llm_task_queue(prefix: str, model: str) -> str:
    """The pool queue of a model."""
    return f"{prefix}{model}"


def priority_of(spec: RunSpec, scheduling: Scheduling) -> Priority:
    """The Temporal priority of a run's syscalls under its policy.

    Computed from what the kernel fixed at admission, by the workflow when it dispatches and by
    the kernel when it checks what the workflow claimed.
    """
    if scheduling.policy in ("fifo", "rr"):
        return Priority.default
    if scheduling.policy == "priority":
        return Priority(priority_key=spec.priority)
    return Priority(
        priority_key=spec.priority,
        fairness_key=spec.tenant,
        fairness_weight=scheduling.fairness_weight,
    )


def affinity_task_queue(prefix: str, model: str, instance: str) -> str:
    """The queue of one instance of a model's pool."""
    return f"{llm_task_queue(prefix, model)}@{instance}"


def dispatch_llm(run: RunInput, model: str, last_instance: str | None = None) -> Dispatch:
    """Where an LLM syscall of a run goes.

    To the instance that served the run last if the run has affinity and one did, else to the
    model's pool.
    """
    affinity = run.scheduling.affinity_s
    if affinity and last_instance is not None:
        return Dispatch(
            task_queue=affinity_task_queue(run.llm_queue_prefix, model, last_instance),
            priority=priority_of(run.spec, run.scheduling),
            schedule_to_start=timedelta(seconds=affinity),
        )
    return Dispatch(
        task_queue=llm_task_queue(run.llm_queue_prefix, model),
        priority=priority_of(run.spec, run.scheduling),
    )
