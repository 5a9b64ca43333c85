"""How a run's end is read from what Temporal answers a client waiting for its result."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    TimeoutType,
)

from kernos.kernel.run_ends import ended_as


@pytest.mark.parametrize(
    ("cause", "status", "error"),
    [
        (ApplicationError("no such file", type="NotFound"), "failed", "NotFound: no such file"),
        (ApplicationError("boom"), "failed", "Failed: boom"),
        (CancelledError("Workflow cancelled"), "cancelled", "cancelled"),
        (TerminatedError("it did not stop"), "cancelled", "terminated: it did not stop"),
        (
            TimeoutError(
                "Workflow timed out", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[]
            ),
            "failed",
            "TimedOut: the run timed out",
        ),
    ],
    ids=["application", "untyped", "cancelled", "terminated", "timed-out"],
)
def test_each_way_a_run_closes_is_recorded_as_the_kernel_words_it(
    cause: BaseException, status: str, error: str
) -> None:
    failure = WorkflowFailureError(cause=cause)
    outcome = ended_as(failure)
    assert (outcome.status, outcome.error, outcome.output) == (status, error, None)
