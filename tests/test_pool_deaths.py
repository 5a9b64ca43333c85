"""What a run's history says of its pool deaths, as a host reads it (no servers)."""

from __future__ import annotations

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.contrib.pydantic import pydantic_data_converter

from kernos.workflows.pool_deaths import POOL_DEATH, deaths_in

_CONVERTER = pydantic_data_converter.payload_converter


def activation(*signals: tuple[str, object]) -> WorkflowActivation:
    act = WorkflowActivation(run_id="run")
    for name, value in signals:
        job = act.jobs.add()
        job.signal_workflow.signal_name = name
        job.signal_workflow.input.extend(_CONVERTER.to_payloads([value]))
    act.jobs.add().fire_timer.seq = 1
    return act


def test_the_highest_count_any_death_signal_says_is_the_runs() -> None:
    said = deaths_in(
        activation(
            (POOL_DEATH, {"count": 2, "reason": "exited"}),
            ("approval", {"count": 9, "reason": "not ours"}),
            (POOL_DEATH, {"count": 3, "reason": "did not answer within 30 s"}),
            (POOL_DEATH, {"count": 1, "reason": "late"}),
        )
    )
    assert said is not None and (said.count, said.reason) == (3, "did not answer within 30 s")


def test_an_unreadable_death_signal_counts_for_nothing() -> None:
    assert deaths_in(activation()) is None
    assert deaths_in(activation((POOL_DEATH, {"count": 0, "reason": "x"}))) is None
    assert deaths_in(activation((POOL_DEATH, "three"), (POOL_DEATH, [1, 2]))) is None
    assert deaths_in(activation((POOL_DEATH, {"count": 2, "reason": "x" * 5000}))) is None
