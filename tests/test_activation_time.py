"""How long an activation may take in its pool's process: the timeout counts the time the
process ran or slept, not the time others kept it from a CPU, up to a cap (`ActivationTime`)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from kernos.infra.pool_limits import CpuLook
from kernos.workflows.pool_process import CROWDED_TIMES, ActivationTime


class Clock:
    """The wall clock, and what the process waited for a CPU and used of one, as set here."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waited = 50.0
        self.cpu = 20.0

    def look(self) -> CpuLook:
        return CpuLook(self.now, self.waited, self.cpu)

    def passes(self, seconds: float, *, waiting: float = 0.0, using: float = 0.0) -> None:
        self.now += seconds
        self.waited += waiting
        self.cpu += using


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", lambda: clock.now)
    return clock


def timed(clock: Clock, loaded_at: Callable[[], float | None] = lambda: 0.0) -> ActivationTime:
    """An activation with a 10 s timeout, sent now to a process that loaded at `loaded_at()`."""
    return ActivationTime("run", 10.0, clock, loaded_at)  # type: ignore[arg-type]


def capped(waited_s: float) -> str:
    """Why an activation with a 10 s timeout is over at its cap, having waited `waited_s`."""
    return (
        f"within 10 s ([isolation] activation_timeout_s, and {CROWDED_TIMES} times that at "
        f"most while it waited for a CPU or for its process to load: {CROWDED_TIMES * 10} s, "
        f"{waited_s:.0f} s of them waiting)"
    )


def test_a_process_that_runs_or_sleeps_has_the_timeout(clock: Clock) -> None:
    had = timed(clock)
    clock.passes(1.0)
    assert had.over() is None  # the first look: what the process waited before is not counted
    clock.passes(8.5, using=8.5)
    assert had.over() is None
    clock.passes(0.5)
    assert had.over() == "within 10 s ([isolation] activation_timeout_s)"
    clock.passes(0.5)
    assert had.over() is None  # said once: one thread ends the process and charges the run


def test_the_time_others_keep_a_process_from_a_cpu_is_not_counted(clock: Clock) -> None:
    had = timed(clock)
    clock.passes(1.0, waiting=1.0)
    assert had.over() is None
    clock.passes(20.0, waiting=15.0, using=2.0)  # 5 s of its own so far
    assert had.over() is None
    clock.passes(5.0)
    assert had.over() == (
        "within 10 s ([isolation] activation_timeout_s; it waited 15 s more for a CPU)"
    )


def test_its_own_threads_queueing_for_the_cpus_it_uses_are_not_a_crowd(clock: Clock) -> None:
    # Eight threads spinning on two CPUs: each waits three quarters of the time, but the
    # process has both CPUs all along.
    had = timed(clock)
    clock.passes(1.0)
    assert had.over() is None
    clock.passes(9.0, waiting=8 * 9.0 * 0.75, using=2 * 9.0)
    assert had.over() == "within 10 s ([isolation] activation_timeout_s)"


def test_waiting_for_a_cpu_has_a_cap(clock: Clock) -> None:
    had = timed(clock)
    clock.passes(1.0)
    assert had.over() is None
    wall = CROWDED_TIMES * 10.0
    clock.passes(wall - 1.5, waiting=wall - 2.0)
    assert had.over() is None
    clock.passes(0.5)
    assert had.over() == capped(waited_s=wall - 2)


def test_the_time_a_new_process_takes_to_load_is_not_counted(clock: Clock) -> None:
    # A new pool's first activation, sent while its process still loads the packages every
    # pool's process loads: the kernel's work, however long a busy host makes it.
    loaded: list[float] = []
    had = timed(clock, lambda: loaded[0] if loaded else None)
    clock.passes(15.0, using=15.0)
    assert had.over() is None
    loaded.append(clock.now)
    clock.passes(1.0, using=1.0)
    assert had.over() is None  # its first look, once its time counts
    clock.passes(8.5, using=8.5)
    assert had.over() is None
    clock.passes(0.5, using=0.5)
    assert had.over() == "within 10 s ([isolation] activation_timeout_s)"


def test_loading_and_waiting_for_a_cpu_after_are_each_not_counted(clock: Clock) -> None:
    loaded: list[float] = []
    had = timed(clock, lambda: loaded[0] if loaded else None)
    clock.passes(6.0, waiting=6.0)  # the process loads, on a crowded host
    assert had.over() is None
    loaded.append(clock.now)
    clock.passes(1.0, waiting=1.0)
    assert had.over() is None  # its first look: the waits before it are not counted
    clock.passes(14.0, waiting=7.0, using=7.0)  # 7 s of its own
    assert had.over() is None
    clock.passes(3.0, using=3.0)
    assert had.over() == (
        "within 10 s ([isolation] activation_timeout_s; it waited 7 s more for a CPU)"
    )


def test_a_process_that_never_loads_has_the_cap(clock: Clock) -> None:
    had = timed(clock, lambda: None)
    wall = CROWDED_TIMES * 10.0
    clock.passes(wall - 0.5, using=wall - 0.5)
    assert had.over() is None
    clock.passes(0.5)
    assert had.over() == capped(waited_s=wall)
