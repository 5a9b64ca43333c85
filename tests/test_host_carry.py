"""What a host writes into a run's continue-as-new, as the next execution's host reads it."""

from __future__ import annotations

from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import ContinueAsNewInitiator
from temporalio.bridge.proto.workflow_activation import InitializeWorkflow
from temporalio.bridge.proto.workflow_commands import ContinueAsNewWorkflowExecution

from kernos.workflows.host_carry import HOST_CARRY, HostCarry, carried, write_carry
from kernos.workflows.pool_deaths import PoolDeath


def started_from(command: ContinueAsNewWorkflowExecution, continued: bool) -> InitializeWorkflow:
    """The next execution's start, as Temporal makes it from `command`."""
    start = InitializeWorkflow(workflow_id="run")
    if continued:
        start.continued_from_execution_run_id = "before"
        start.continued_initiator = ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW
    for name, payload in command.headers.items():
        start.headers[name].CopyFrom(payload)
    return start


def test_what_a_host_counted_reaches_the_next_execution() -> None:
    command = ContinueAsNewWorkflowExecution()
    carry = HostCarry(deaths=PoolDeath.said(2, "exited" * 1000), left_running=[12.5, 40.0])
    write_carry(command, carry)
    found = carried(started_from(command, continued=True))
    assert found.deaths is not None and found.deaths.count == 2
    assert len(found.deaths.reason) == 2000  # (cut to what a death signal carries)
    assert found.left_running == [12.5, 40.0]


def test_a_run_started_afresh_carries_nothing_whatever_its_starter_wrote() -> None:
    command = ContinueAsNewWorkflowExecution()
    write_carry(command, HostCarry(deaths=PoolDeath.said(1, "x")))
    assert carried(started_from(command, continued=False)) == HostCarry()
    # A retry names the execution before it too, with its starter's headers: no host's carry.
    retried = started_from(command, continued=True)
    retried.continued_initiator = ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_RETRY
    assert carried(retried) == HostCarry()


def test_an_unreadable_carry_counts_for_nothing() -> None:
    for unreadable in (
        Payload(metadata={"encoding": b"json/plain"}, data=b'{"left_running": "soon"}'),
        Payload(metadata={"encoding": b"binary/zstd"}, data=b"\x28\xb5"),  # (a KeyError)
    ):
        command = ContinueAsNewWorkflowExecution()
        command.headers[HOST_CARRY].CopyFrom(unreadable)
        assert carried(started_from(command, continued=True)) == HostCarry()
