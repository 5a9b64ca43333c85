"""The share of a host's workflow-task slots each pool keeps (no Temporal: a clock of our own)."""

from __future__ import annotations

from collections.abc import Callable

from kernos.workflows.slot_shares import CONTESTED_S, HELD_S, REMEMBERED_S, SlotShares


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fill(shares: SlotShares, pool: str, count: int, first: int = 0) -> list[int]:
    """Start `count` tasks of `pool`; the ones that were let in."""
    started = []
    for task in range(first, first + count):
        if shares.starts(pool, task) is None:
            started.append(task)
    return started


def given_back_log(shares: SlotShares, pool: str, tasks: list[int]) -> list[tuple[int, str]]:
    """Make `tasks` of `pool` able to be given back; what was given back lands in the list."""
    log: list[tuple[int, str]] = []

    def recorder(task: int) -> Callable[[str], None]:
        return lambda reason: log.append((task, reason))

    for task in tasks:
        shares.can_give_back(pool, task, recorder(task))
    return log


def test_a_pool_alone_takes_every_slot_and_leaves_a_share_free_once_they_are_held() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    log = given_back_log(shares, "big", fill(shares, "big", 20))
    assert shares.tasks() == {"big": 20}
    assert shares.rebalance() == 0  # quick, so far
    clock.now += HELD_S + 0.5
    # Held: the latest are given back until a share of the slots is free, so that the SDK
    # polls on and a tenant that comes finds a slot at once.
    assert shares.rebalance() == 5 and [task for task, _ in log] == [19, 18, 17, 16, 15]
    assert "the slots kept free for other pools were taken" in log[0][1]
    assert shares.rebalance() == 0  # until they end
    for task in range(15, 20):
        shares.ends("big", task)
    assert shares.rebalance() == 0  # and not again: the line is kept
    # Its next are turned back while they would leave less than a share free...
    reason = shares.starts("big", 99)
    assert reason is not None and "pool_share" in reason
    assert shares.turned_back() == {"big": 6}
    # ...and another pool's are let in.
    assert fill(shares, "small", 5, first=200) == list(range(200, 205))
    assert shares.tasks() == {"big": 15, "small": 5}


def test_a_crowded_pool_over_its_share_is_turned_back_once_its_tasks_are_held() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    assert len(fill(shares, "big", 16)) == 16  # quick tasks: let in past the share
    clock.now += HELD_S + 0.5
    reason = shares.starts("big", 50)
    assert reason is not None and "for 1.5 s" in reason
    # Another pool under its share still gets a slot.
    assert shares.starts("small", 1) is None
    shares.ends("big", 0)
    assert shares.tasks() == {"big": 15, "small": 1}


def test_held_tasks_over_a_share_are_given_back_as_other_pools_take_the_free_ones() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    log = given_back_log(shares, "holder", fill(shares, "holder", 19))
    clock.now += HELD_S + 0.5
    assert shares.rebalance() == 4  # a share of the slots is left free for whoever comes
    # Another pool takes them (on a crowded host, under its share): the holder gives back as
    # many, down to its share and no further.
    for batch, expected in enumerate([5, 5, 0]):
        for task, _ in log:
            shares.ends("holder", task)
        assert fill(shares, "honest", 5, first=batch * 5) == list(range(batch * 5, batch * 5 + 5))
        assert shares.rebalance() == expected
    # The latest held go first; the pool keeps its share, the oldest.
    assert sorted(task for task, _ in log) == list(range(5, 19))
    assert "other pools were taken" in log[0][1] and "pool_share" in log[0][1]
    # Until they end, they are not given back twice.
    assert shares.rebalance() == 0
    assert shares.tasks() == {"holder": 5, "honest": 15}
    assert shares.turned_back() == {"holder": 14}


def test_the_pool_furthest_over_its_share_gives_back_first() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    given_back_log(shares, "wide", fill(shares, "wide", 13))
    given_back_log(shares, "narrow", fill(shares, "narrow", 7, first=100))
    clock.now += HELD_S + 0.5
    assert shares.rebalance() == 5
    assert shares.turned_back() == {"wide": 5}
    for task in range(8, 13):
        shares.ends("wide", task)
    assert shares.tasks() == {"wide": 8, "narrow": 7}


def test_quick_tasks_are_never_given_back() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    log = given_back_log(shares, "busy", fill(shares, "busy", 19))
    clock.now += HELD_S / 2
    assert shares.starts("other", 0) is None
    assert shares.rebalance() == 0 and log == []


def test_a_pool_bursting_quick_tasks_is_not_held_to_its_share() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    assert shares.starts("other", 0) is None
    clock.now += 0.1
    # Contested, and past its share on a crowded host: its tasks are quick, so all come in.
    assert len(fill(shares, "burst", 18, first=100)) == 18
    assert shares.rebalance() == 0


def test_a_pool_that_holds_its_tasks_is_turned_back_at_its_share_while_contested() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    fill(shares, "holder", 5)
    clock.now += HELD_S + 0.5
    assert shares.starts("holder", 5) is None  # nobody else here, and room to spare
    assert shares.starts("other", 0) is None
    reason = shares.starts("holder", 6)  # not crowded, but another pool wants slots
    assert reason is not None and "other pools may need them" in reason


def test_a_pool_whose_process_is_starting_already_contests_the_slots() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    fill(shares, "holder", 5)
    clock.now += HELD_S + 0.5
    shares.arrives("newcomer")  # its task waits for its pool's process, not yet started
    reason = shares.starts("holder", 5)
    assert reason is not None and "other pools may need them" in reason


def test_a_wait_counts_for_a_while_only() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    fill(shares, "holder", 5)
    clock.now += HELD_S + 0.5
    assert shares.starts("honest", 0) is None
    shares.ends("honest", 0)
    assert shares.starts("holder", 5) is not None  # at its share, holding, and contested
    clock.now += CONTESTED_S + 0.5
    assert shares.starts("holder", 6) is None  # the other pool's start counts no longer


def test_a_share_of_one_turns_it_off() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=20, clock=clock)
    log = given_back_log(shares, "holder", fill(shares, "holder", 19))
    clock.now += 10
    assert shares.starts("other", 0) is None
    assert shares.rebalance() == 0 and log == []
    assert shares.turned_back() == {}


def test_a_pool_held_to_its_share_is_held_to_it_as_its_tasks_come_back() -> None:
    clock = Clock()
    shares = SlotShares(slots=20, share=5, clock=clock)
    log = given_back_log(shares, "holder", fill(shares, "holder", 16))
    assert shares.starts("honest", 0) is None
    clock.now += HELD_S + 0.5
    assert shares.rebalance() == 2  # back to the line: a share free
    for task in range(16):
        shares.ends("holder", task)
    # Its runs' tasks come back together (cancelled, retried): new, none held yet, but the
    # pool was held to its share, so past it they are turned back while others want slots.
    clock.now += 1.0
    assert shares.starts("honest", 1) is None
    assert len(fill(shares, "holder", 12, first=100)) == 5
    reason = shares.starts("holder", 200)
    assert reason is not None and "had a task turned back 0.0 s ago" in reason and len(log) == 2
    # Remembered for a while only; a pool never held to its share is never turned back so.
    clock.now += REMEMBERED_S + 1
    for task in range(100, 105):
        shares.ends("holder", task)
    assert shares.starts("honest", 2) is None
    assert len(fill(shares, "holder", 12, first=300)) == 12
