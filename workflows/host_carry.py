"""What a run's host counted that must outlive the run's continue-as-new, on any host.

A host counts a run's breaks of its pool's process (`pool_deaths`) and the syscalls the run
left running (`run_limits.RunBounds`). An execution that continues as new starts a history of
its own, which neither the death signals nor the syscalls of the one before reach, and its
first task may go to any host, or to this one after a restart: kept in one host's memory, the
counts would start again from nothing there, and a run could break a process or leave
syscalls running anew in every execution it lands elsewhere.

So the host that lets a continue-as-new through writes what it counted into the command's
headers, under `HOST_CARRY`, and the next execution's host reads it from that execution's
start. Agent code cannot write it (a continue-as-new with headers of the code's own is refused,
`CommandCheck`, and the host writes this one after) nor read it (its pool's process gets the
run's info without headers, and its first activation with the start's headers cleared,
`activation_check`). A run that did not continue as new from another carries nothing: a
header there came from its starter, not from a host.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field
from temporalio.api.enums.v1 import ContinueAsNewInitiator
from temporalio.bridge.proto.workflow_activation import InitializeWorkflow
from temporalio.bridge.proto.workflow_commands import ContinueAsNewWorkflowExecution
from temporalio.contrib.pydantic import pydantic_data_converter

from kernos.workflows.pool_deaths import PoolDeath

log = logging.getLogger(__name__)

#: The header's name (seen in the Temporal UI on the continued execution's start).
HOST_CARRY = "kernos-host-carry"
_CONVERTER = pydantic_data_converter.payload_converter


class HostCarry(BaseModel):
    """A run's counts on its host as it continued as new."""

    #: Its breaks of its pool's process so far, and the last one's cause.
    deaths: PoolDeath | None = None
    #: When (workflow time) each syscall the run's executions left running has surely stopped.
    #: (Only a host writes it: no bound but the run's own limit on what it has pending.)
    left_running: list[float] = Field(default_factory=list)


def write_carry(command: ContinueAsNewWorkflowExecution, carry: HostCarry) -> None:
    """Put `carry` into the continue-as-new command's headers (which the check found empty)."""
    command.headers[HOST_CARRY].CopyFrom(_CONVERTER.to_payloads([carry.model_dump()])[0])


def carried(start: InitializeWorkflow) -> HostCarry:
    """What the execution that `start` continued carried (nothing for a run started afresh)."""
    # (A retry or a cron run also names the execution before it, with its starter's headers.)
    continued = (
        start.continued_initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW
    )
    if not continued or HOST_CARRY not in start.headers:
        return HostCarry()
    try:
        return HostCarry.model_validate(_CONVERTER.from_payloads([start.headers[HOST_CARRY]])[0])
    except Exception as exc:  # noqa: BLE001 - a stuck run would be worse than counts lost
        # Only a host writes it: unreadable (another version's, another encoding), it is a
        # host's bug, and counts start again rather than the run failing every task.
        log.warning("run %s: its %s header is unreadable: %s", start.workflow_id, HOST_CARRY, exc)
        return HostCarry()
