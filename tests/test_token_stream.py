"""A generation's text as `llm.delta` events: what is written, from where, and when not."""

from __future__ import annotations

import asyncio

from kernos.activities.token_stream import TokenStream
from kernos.kernel.run_events import RunEventLog

Delta = tuple[int, str]


class FakeLog(RunEventLog):
    """Notes each delta; fails the writes it is told to."""

    def __init__(self, failing: int = 0) -> None:
        self.deltas: list[Delta] = []
        self.failing = failing

    async def append_delta(
        self, run_id: str, generation: str, model: str, offset: int, text: str
    ) -> None:
        if self.failing:
            self.failing -= 1
            raise OSError("the database went away")
        self.deltas.append((offset, text))


def stream(log: FakeLog, sent: str = "") -> TokenStream:
    return TokenStream(log, "run-1", "gen-1", "m", sent, interval_s=0.05)


async def test_a_generation_that_ends_within_its_first_interval_writes_nothing() -> None:
    log = FakeLog()
    tokens = stream(log)
    tokens.note("Hel")
    tokens.note("Hello")
    await tokens.finish("Hello.")
    await asyncio.sleep(0.1)
    assert log.deltas == []


async def test_a_longer_one_is_written_in_pieces_each_from_where_the_last_ended() -> None:
    log = FakeLog()
    tokens = stream(log)
    tokens.note("Once")
    await asyncio.sleep(0.1)
    tokens.note("Once upon")
    tokens.note("Once upon a time")
    await asyncio.sleep(0.1)
    await tokens.finish("Once upon a time.")
    assert log.deltas == [(0, "Once"), (4, " upon a time"), (16, ".")]


async def test_a_resumed_generation_goes_on_from_what_followers_have_rewriting_changes() -> None:
    log = FakeLog()
    # An earlier attempt sent "Once upon"; the retry's text differs from the 5th character on.
    tokens = stream(log, sent="Once upon")
    await tokens.finish("Once, a time.")
    assert log.deltas == [(4, ", a time.")]


async def test_a_failed_write_is_carried_by_the_next() -> None:
    log = FakeLog(failing=1)
    tokens = stream(log)
    tokens.note("Once")
    await asyncio.sleep(0.1)
    await tokens.finish("Once upon")
    assert log.deltas == [(0, "Once upon")]
