"""A gateway's count of each API key's requests (its token bucket), on a clock of the test's."""

from __future__ import annotations

import pytest

from kernos.gateway import KeyRates
from kernos.kernel.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_makes_its_minutes_requests_at_once_then_waits_for_the_next() -> None:
    clock = Clock()
    rates = KeyRates(60, clock)
    for _ in range(60):
        rates.take("k1")
    with pytest.raises(RateLimited, match="more than 60 requests in a minute") as refused:
        rates.take("k1")
    assert refused.value.retry_after_s == pytest.approx(1.0)
    rates.take("k2")  # another key's are its own
    clock.now = 1.0  # a second fills one request back
    rates.take("k1")
    with pytest.raises(RateLimited):
        rates.take("k1")
    clock.now = 3600.0  # an hour fills the bucket, and no more
    for _ in range(60):
        rates.take("k1")
    with pytest.raises(RateLimited):
        rates.take("k1")


def test_no_limit_counts_nothing() -> None:
    rates = KeyRates(None)
    for _ in range(10_000):
        rates.take("k1")


def test_a_check_counts_nothing_and_refuses_a_key_with_none_left() -> None:
    clock = Clock()
    rates = KeyRates(2, clock)
    rates.check("k1")  # an unknown key: nothing to refuse, nothing counted
    rates.check(None)
    rates.take("k1")
    rates.check("k1")
    rates.take("k1")
    with pytest.raises(RateLimited):
        rates.check("k1")
    clock.now = 30.0  # a minute's half fills one request back
    rates.check("k1")
    rates.take("k1")
