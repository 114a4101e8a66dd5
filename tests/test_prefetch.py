"""Receive-ahead sizing: one receive cycle's worth of completions, in whole receives, if it pays.

Pure logic against a fake clock; what the worker does with the extra slots runs against moto in
test_worker.py.
"""

from __future__ import annotations

import pytest

from worker.consume.capacity import Capacity
from worker.consume.prefetch import Prefetch

FILL = 0.02  # WORKER_RECEIVE_FILL_SECONDS's default


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sized(concurrency: int, most: int) -> tuple[Capacity, Prefetch, Clock]:
    clock = Clock()
    capacity = Capacity(concurrency)
    return capacity, Prefetch(capacity, most, fill_seconds=FILL, now=clock), clock


def steady(
    prefetch: Prefetch,
    clock: Clock,
    *,
    rate: float,
    round_trip: float,
    seconds: float,
    duration: float,
) -> None:
    """Completions at ``rate`` per second, each call having run ``duration`` seconds, and a
    receive every 10 ms taking ``round_trip``."""
    step = 0.01
    for _ in range(round(seconds / step)):
        clock.now += step
        prefetch.completed(duration, round(rate * step))
        prefetch.received(round_trip)


class TestAllowance:
    """How many slots the capacity gets beyond the concurrency limit."""

    @pytest.mark.parametrize(
        ("concurrency", "most", "rate", "round_trip", "ahead"),
        [
            # 500/s x (20 ms fill + 20 ms round trip) = 20 completions a cycle: two receives.
            pytest.param(50, 100, 500, 0.02, 20, id="short handlers: a cycle's completions"),
            # 4 completions a cycle: one receive of ten.
            pytest.param(50, 100, 100, 0.02, 10, id="part of a receive counts as a whole"),
            # 3.2 completions a cycle; a receive for four slots brings up to four.
            pytest.param(4, 100, 80, 0.02, 4, id="a small pool receives its slots' worth"),
            pytest.param(50, 20, 1000, 0.05, 20, id="bounded by WORKER_PREFETCH"),
            # 10 s handlers: 0.04 completions a cycle, under 1% of the pool's time idle.
            pytest.param(10, 20, 1, 0.02, 0, id="handlers of seconds get none"),
            pytest.param(10, 0, 1000, 0.05, 0, id="zero disables it"),
        ],
    )
    def test_a_busy_pool(
        self, concurrency: int, most: int, rate: float, round_trip: float, ahead: int
    ) -> None:
        capacity, prefetch, clock = sized(concurrency, most)
        full = concurrency / rate  # each call as long as keeps every slot busy
        steady(prefetch, clock, rate=rate, round_trip=round_trip, seconds=30, duration=full)
        assert prefetch.ahead == ahead
        assert capacity.limit == concurrency + ahead

    @pytest.mark.parametrize(
        ("duration", "ahead"),
        [
            # 700/s x 0.1 ms: the handlers hold 0.07 of 50 slots; receives in flight hold the rest.
            pytest.param(0.0001, 0, id="near-instant handlers: nothing to refill"),
            pytest.param(0.03, 0, id="handlers holding 21 of 50 slots"),
            # 28 completions a cycle: three receives of ten.
            pytest.param(0.04, 30, id="handlers holding 28 of 50 slots"),
        ],
    )
    def test_only_where_handlers_hold_half_the_pool(self, duration: float, ahead: int) -> None:
        capacity, prefetch, clock = sized(50, most=100)
        steady(prefetch, clock, rate=700, round_trip=0.02, seconds=30, duration=duration)
        assert prefetch.running == pytest.approx(700 * duration, rel=0.02)
        assert prefetch.ahead == ahead
        assert capacity.limit == 50 + ahead

    def test_the_averages_follow_the_measurements(self) -> None:
        _, prefetch, clock = sized(50, most=100)
        steady(prefetch, clock, rate=500, round_trip=0.02, seconds=20, duration=0.1)
        assert prefetch.rate == pytest.approx(500, rel=0.01)
        assert prefetch.round_trip == pytest.approx(0.02)

    def test_long_running_handlers_get_none(self) -> None:
        capacity, prefetch, clock = sized(4, most=20)
        for _ in range(30):  # one completion, and so one receive, a minute
            clock.now += 60
            prefetch.completed(240)
            prefetch.received(0.05)
        assert prefetch.ahead == 0
        assert capacity.limit == 4

    def test_falls_when_the_load_does(self) -> None:
        capacity, prefetch, clock = sized(50, most=100)
        steady(prefetch, clock, rate=1000, round_trip=0.02, seconds=10, duration=0.05)
        assert prefetch.ahead == 40
        steady(prefetch, clock, rate=100, round_trip=0.02, seconds=10, duration=0.5)
        assert prefetch.ahead == 10
        steady(prefetch, clock, rate=1, round_trip=0.02, seconds=20, duration=50)
        assert prefetch.ahead == 0
        assert capacity.limit == 50

    def test_a_slow_receive_moves_the_round_trip_by_a_fifth(self) -> None:
        _, prefetch, clock = sized(10, most=20)
        prefetch.received(0.02)
        clock.now += 0.01
        prefetch.received(0.12)
        assert prefetch.round_trip == pytest.approx(0.04)
