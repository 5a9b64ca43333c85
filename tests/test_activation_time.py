"""How long an activation may take in its pool's process: the timeout counts the time the
process ran or slept, not the time it waited for a CPU, up to a cap (`ActivationTime`)."""

from __future__ import annotations

import time

import pytest

from kernos.workflows.pool_process import CROWDED_TIMES, ActivationTime


class Clock:
    """The wall clock, and how long the process has waited for a CPU, as the test sets them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waited = 50.0

    def seconds(self) -> float:
        return self.waited


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", lambda: clock.now)
    return clock


def passes(clock: Clock, seconds: float, waiting: float = 0.0) -> None:
    clock.now += seconds
    clock.waited += waiting


def test_a_process_that_runs_or_sleeps_has_the_timeout(clock: Clock) -> None:
    had = ActivationTime("run", 10.0, clock)  # type: ignore[arg-type]
    passes(clock, 1.0)
    assert had.over() is None  # the first look: what the process waited before is not counted
    passes(clock, 8.5)
    assert had.over() is None
    passes(clock, 0.5)
    assert had.over() == "within 10 s ([isolation] activation_timeout_s)"


def test_the_time_a_process_waits_for_a_cpu_is_not_counted(clock: Clock) -> None:
    had = ActivationTime("run", 10.0, clock)  # type: ignore[arg-type]
    passes(clock, 1.0, waiting=1.0)
    assert had.over() is None
    passes(clock, 20.0, waiting=15.0)  # 6 s of its own so far
    assert had.over() is None
    passes(clock, 4.0)
    assert had.over() == (
        "within 10 s ([isolation] activation_timeout_s, and waited 15 s for a CPU)"
    )


def test_waiting_for_a_cpu_has_a_cap(clock: Clock) -> None:
    had = ActivationTime("run", 10.0, clock)  # type: ignore[arg-type]
    passes(clock, 1.0)
    assert had.over() is None
    passes(clock, CROWDED_TIMES * 10.0 - 1.5, waiting=CROWDED_TIMES * 10.0)
    assert had.over() is None
    passes(clock, 0.5)
    assert had.over() == (
        f"within {CROWDED_TIMES * 10} s, though it waited {CROWDED_TIMES * 10} s of them for a "
        f"CPU ({CROWDED_TIMES} times [isolation] activation_timeout_s at most)"
    )
