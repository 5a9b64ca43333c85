"""A fair share of a pool host's workflow-task slots.

A slot is taken for as long as a workflow task runs, and Temporal's SDK polls for no task while
every slot is taken: a pool whose code holds its tasks (a blocking call, a loop) could take
them all and leave every other tenant unserved, with no sign on the host that anyone waits.
A task counts as held once it has run `HELD_S` (a quick one takes milliseconds); a pool is
contested while another pool started a task in the last `CONTESTED_S` (or began to start its
process for one: a newcomer wants a slot all the while); the host is crowded once no more than
a share of its slots are free. Then:

- a pool at its share that holds a task, on a crowded host or contested, has its next task
  turned back: Temporal gives it again later; so does one that had a task turned or given back
  in the last `REMEMBERED_S`, however new its tasks (a holder's tasks come back together,
  its runs cancelled or their tasks retried, and would each take a slot for a second before
  they counted as held);
- held tasks of pools over their share are given back, the latest first and from the pool
  furthest over its share, until a share of the slots is free again: the SDK keeps polling, a
  tenant that comes finds a slot at once (not once one frees), and as it takes them, holders
  give back more, down to their share. Each task given back costs its run a replay, so no more
  are given back than keep that share free. The host answers Temporal for a task given back
  at once (it is retried; its run replays in a fresh instance), and the pool's process drops
  its instance once its code lets go, within the activation timeout still.

Quick tasks are never given back, and a pool that holds none is never turned back: a pool
bursting many short runs keeps every slot it can use.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: A task held this long counts as held (a quick one takes milliseconds).
HELD_S = 1.0
#: How long another pool's task start counts as that pool wanting slots.
CONTESTED_S = 2.0

#: How long a pool that had a task turned or given back is held to its share as it arrives
#: (Temporal gives a task again at once the first time, then after its 10 s timeout).
REMEMBERED_S = 30.0

#: Gives a task back: its host answers Temporal at once, with this reason.
GiveBack = Callable[[str], None]


@dataclass
class _Task:
    started: float
    give_back: GiveBack | None = None
    given_back: bool = False


class SlotShares:
    """Which pool holds which of a host's workflow-task slots, and who must give some back."""

    def __init__(self, slots: int, share: int, clock: Callable[[], float] = time.monotonic) -> None:
        #: The slots tasks can take (not those Temporal's SDK holds for its open polls).
        self.slots = slots
        self.share = share
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, dict[int, _Task]] = {}
        self._running = 0
        #: Pool -> when it last wanted a slot: a task of it started, or its process began to start.
        self._wanted: dict[str, float] = {}
        self._turned_back: collections.Counter[str] = collections.Counter()
        #: Pool -> when a task of it was last turned or given back.
        self._held_to_share: dict[str, float] = {}

    def arrives(self, pool: str) -> None:
        """A task of `pool` waits for the pool's process to start: it wants a slot from now."""
        now = self._clock()
        with self._lock:
            self._wanted[pool] = now

    def starts(self, pool: str, task: int) -> str | None:
        """Count `task` of `pool` as running; or why it is turned back, over the pool's share."""
        now = self._clock()
        with self._lock:
            running = self._tasks.setdefault(pool, {})
            if len(running) >= self.share:
                held_s = now - min(t.started for t in running.values())
                holder = held_s > HELD_S or self._remembered(pool, now)
                if holder and (self._crowded() or self._contested(pool, now)):
                    how = (
                        f"one for {held_s:.1f} s"
                        if held_s > HELD_S
                        else f"and had a task turned back {now - self._held_to_share[pool]:.1f} s "
                        "ago"
                    )
                    self._count_turned_back(pool, now)
                    return (
                        f"pool {pool!r} holds {len(running)} of this host's {self.slots} "
                        f"workflow-task slots, its share ([isolation] pool_share), {how}, "
                        "while other pools may need them: this task waits for Temporal to give "
                        "it again"
                    )
            running[task] = _Task(now)
            self._running += 1
            self._wanted[pool] = now
        return None

    def _remembered(self, pool: str, now: float) -> bool:
        return now - self._held_to_share.get(pool, float("-inf")) <= REMEMBERED_S

    def _count_turned_back(self, pool: str, now: float) -> None:
        self._turned_back[pool] += 1
        self._held_to_share[pool] = now

    def _crowded(self) -> bool:
        return self._running >= self.slots - self.share

    def _contested(self, pool: str, now: float) -> bool:
        return any(
            other != pool and now - when <= CONTESTED_S for other, when in self._wanted.items()
        )

    def can_give_back(self, pool: str, task: int, give_back: GiveBack) -> None:
        """`task`, counted by `starts`, is running in its pool's process: how to give it back."""
        with self._lock:
            running = self._tasks.get(pool, {}).get(task)
            if running is not None:
                running.give_back = give_back

    def ends(self, pool: str, task: int) -> None:
        """`task` of `pool`, counted by `starts`, is done (or given back)."""
        with self._lock:
            running = self._tasks.get(pool, {})
            if running.pop(task, None) is not None:
                self._running -= 1
            if not running:
                self._tasks.pop(pool, None)

    def rebalance(self) -> int:
        """Have pools over their share give back held tasks (see the module); how many."""
        now = self._clock()
        chosen: list[tuple[GiveBack, str]] = []
        with self._lock:
            self._wanted = {
                pool: when for pool, when in self._wanted.items() if now - when <= CONTESTED_S
            }
            self._held_to_share = {
                pool: when
                for pool, when in self._held_to_share.items()
                if self._remembered(pool, now)
            }
            if not self._crowded():
                return 0
            counts = {
                pool: sum(not t.given_back for t in running.values())
                for pool, running in self._tasks.items()
            }
            # Each pool's tasks that may be given back: held, the latest last.
            held = {
                pool: sorted(
                    (
                        t
                        for t in running.values()
                        if not t.given_back and t.give_back is not None and now - t.started > HELD_S
                    ),
                    key=lambda t: t.started,
                )
                for pool, running in self._tasks.items()
            }
            # Tasks past the line that leaves a share of the slots free for whoever comes.
            crowding = sum(counts.values()) - (self.slots - self.share)
            while crowding > 0:
                over = [p for p, count in counts.items() if count > self.share and held[p]]
                if not over:
                    break
                pool = max(over, key=lambda p: counts[p])
                task = held[pool].pop()
                assert task.give_back is not None
                task.given_back = True
                chosen.append(
                    (
                        task.give_back,
                        f"pool {pool!r} held {counts[pool]} of this host's {self.slots} "
                        "workflow-task slots, over its share ([isolation] pool_share), this one "
                        f"for {now - task.started:.1f} s, and the slots kept free for other "
                        "pools were taken: the task is given back, to be retried",
                    )
                )
                counts[pool] -= 1
                crowding -= 1
                self._count_turned_back(pool, now)
        for give_back, reason in chosen:
            give_back(reason)  # (a task that has just ended is not given back: no harm)
        return len(chosen)

    def tasks(self) -> dict[str, int]:
        """Pool -> its tasks running now."""
        with self._lock:
            return {pool: len(running) for pool, running in self._tasks.items()}

    def turned_back(self) -> dict[str, int]:
        """Pool -> its tasks turned back or given back over its share, so far."""
        with self._lock:
            return dict(self._turned_back)
