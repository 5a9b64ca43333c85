"""What the kernel's long-lived workflows (the audit anchor, the hosts' reports) share."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow


async def until_history_is_long(signals: Callable[[], int], per_execution: int) -> None:
    """Wait until this execution has had enough signals, and its handlers have finished.

    Enough: `per_execution`, or fewer if Temporal suggests continuing as new. Then its state
    can go to a new execution.
    """
    await workflow.wait_condition(
        lambda: signals() >= per_execution or workflow.info().is_continue_as_new_suggested()
    )
    await workflow.wait_condition(workflow.all_handlers_finished)
