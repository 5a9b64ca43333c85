"""A run's breaks of its pool's process, written into its own history, so every host counts them.

A run whose code ends its pool's process (a crash, a limit, an activation that does not
answer) fails after `[isolation] max_child_deaths` of them. A host's own count is lost when
it stops, and another host's starts from nothing: a run that keeps breaking processes would
get that many on every host, and again after every restart. So the host that charges a run
also signals it, `POOL_DEATH`, with the count so far: the signal is an event of the run's
history, seen by whichever host replays the run next (which drops it before agent code sees
it, as it drops every signal), and shown in the Temporal UI beside the task that failed.
The count is the most any such signal says: signals sent twice, or late, count once. An
execution that continued as new has a history of its own: the host that let it continue wrote
the count into its start (`host_carry`).

Only holders of the namespace's credentials (the kernel's processes and its hosts) can signal
a run; agent code has none. Signalled falsely, a run fails early: no more than whoever holds
those credentials could do to it anyway.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel, Field, ValidationError
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

log = logging.getLogger(__name__)

#: The signal's name (Temporal keeps names starting `__temporal` for itself).
POOL_DEATH = "kernos-pool-death"
#: Of what ended the process, what the signal carries.
_REASON_CHARS = 2000
_CONVERTER = pydantic_data_converter.payload_converter


class PoolDeath(BaseModel):
    """The run's breaks of its pool's process so far, and what ended it the last time."""

    count: int = Field(ge=1)
    reason: str = Field(max_length=_REASON_CHARS)

    @classmethod
    def said(cls, count: int, reason: str) -> PoolDeath:
        """The count, and as much of the reason as a signal carries."""
        return cls(count=count, reason=reason[:_REASON_CHARS])


def deaths_in(act: WorkflowActivation) -> PoolDeath | None:
    """The highest count this activation's `POOL_DEATH` signals say, if any does."""
    said: PoolDeath | None = None
    for job in act.jobs:
        if job.WhichOneof("variant") != "signal_workflow":
            continue
        signal = job.signal_workflow
        if signal.signal_name != POOL_DEATH or len(signal.input) != 1:
            continue
        try:
            death = PoolDeath.model_validate(_CONVERTER.from_payloads(list(signal.input))[0])
        except (ValidationError, ValueError, TypeError):
            log.warning("run %s: a %s signal that says nothing readable", act.run_id, POOL_DEATH)
            continue
        if said is None or death.count > said.count:
            said = death
    return said


class DeathRecorder:
    """Signals runs their pool deaths from any thread, on the event loop of the host's worker."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def record(self, workflow_id: str, count: int, reason: str) -> None:
        """Signal the run's latest execution (best effort: its host counts this death anyway)."""
        death = PoolDeath.said(count, reason)
        try:
            asyncio.run_coroutine_threadsafe(self._signal(workflow_id, death), self._loop)
        except RuntimeError:  # the loop is closed: the host is gone
            log.warning("run %s: its pool death could not be recorded", workflow_id)

    async def _signal(self, workflow_id: str, death: PoolDeath) -> None:
        # (Nobody awaits this: whatever goes wrong is logged here, or lost.)
        try:
            handle = self._client.get_workflow_handle(workflow_id)
            await handle.signal(POOL_DEATH, death.model_dump())
        except Exception as exc:  # noqa: BLE001 - ended meanwhile, Temporal out of reach
            log.warning("run %s: pool death %d not recorded: %s", workflow_id, death.count, exc)
