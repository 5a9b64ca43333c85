"""What waits in the kernel's task queues, from Temporal's DescribeTaskQueue."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from kernos.kernel.config import Settings
from kernos.kernel.scheduler import llm_task_queue


class QueueStatus(BaseModel):
    """One task queue: its backlog, how old it is, who polls it."""

    name: str
    kind: str
    """`workflow` (agent code) or `activity` (syscalls)."""
    backlog: int
    backlog_age_s: float
    pollers: int
    add_rate: float
    dispatch_rate: float
    backlog_by_priority: dict[int, int]


def kernel_queues(settings: Settings) -> list[tuple[str, TaskQueueType.ValueType]]:
    """Every queue the kernel uses: agents', the kernel's own, one per model."""
    queues = [
        (settings.temporal.agent_task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (settings.temporal.kernel_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    for model in settings.models():
        queue = llm_task_queue(settings.temporal.llm_queue_prefix, model)
        queues.append((queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
    return queues


async def describe_queues(client: Client, settings: Settings) -> list[QueueStatus]:
    """The backlog and pollers of every kernel queue (Temporal's counts are approximate)."""
    result = []
    for name, kind in kernel_queues(settings):
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal.namespace,
                task_queue=TaskQueue(name=name),
                task_queue_type=kind,
                report_stats=True,
            )
        )
        stats = response.stats
        result.append(
            QueueStatus(
                name=name,
                kind="workflow" if kind == TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW else "activity",
                backlog=stats.approximate_backlog_count,
                backlog_age_s=stats.approximate_backlog_age.ToTimedelta().total_seconds(),
                pollers=len(response.pollers),
                add_rate=stats.tasks_add_rate,
                dispatch_rate=stats.tasks_dispatch_rate,
                backlog_by_priority={
                    key: value.approximate_backlog_count
                    for key, value in response.stats_by_priority_key.items()
                    if value.approximate_backlog_count
                },
            )
        )
    return result
