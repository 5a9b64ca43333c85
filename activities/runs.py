"""`run.finish`: the kernel records how a run ended."""

from __future__ import annotations

from temporalio import activity

from kernos.kernel.managers import Kernel
from kernos.kernel.syscall_table import RUN_FINISH
from kernos.kernel.syscalls import RunOutcome


class RunActivities:
    """Lifecycle activities of runs, on the kernel queue."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    @activity.defn(name=RUN_FINISH.name)
    async def finish(self, outcome: RunOutcome) -> None:
        """Record the outcome of the calling run (identified by Temporal, not by the input)."""
        workflow_id = activity.info().workflow_id
        assert workflow_id is not None, "only a workflow finishes a run"
        await self.kernel.runs.finish(workflow_id, outcome)
