"""Retry delays: exponential with equal jitter and a cap, or the queue's own timeout."""

from __future__ import annotations

import random
import statistics
import sys

import pytest

from worker.consume.backoff import ExponentialBackoff, QueueTimeout, RetryDelay

SAMPLES = 2_000


def samples(policy: RetryDelay, receive_count: int) -> list[int]:
    """Many delays for one receive count."""
    return [policy.seconds(receive_count) for _ in range(SAMPLES)]


class TestExponentialBackoff:
    """``base * 2 ** (receive_count - 1)``, capped, keeping at least half of each step."""

    @pytest.mark.parametrize(("receive_count", "step"), [(1, 10), (2, 20), (3, 40), (4, 80)])
    def test_step_doubles_per_receive(self, receive_count: int, step: int) -> None:
        delays = samples(ExponentialBackoff(10, 10_000, random.Random(7)), receive_count)
        assert min(delays) >= step / 2
        assert max(delays) <= step
        # Equal jitter: uniform over the upper half of the step, so the mean is three quarters.
        assert statistics.fmean(delays) == pytest.approx(0.75 * step, rel=0.03)

    def test_jitter_spreads_over_the_upper_half(self) -> None:
        delays = samples(ExponentialBackoff(100, 10_000, random.Random(7)), 1)
        assert min(delays) <= 52
        assert max(delays) >= 98
        assert len(set(delays)) > 40

    def test_never_exceeds_the_cap(self) -> None:
        backoff = ExponentialBackoff(10, 60, random.Random(7))
        for receive_count in range(1, 40):
            assert max(samples(backoff, receive_count)) <= 60

    def test_capped_step_still_keeps_half(self) -> None:
        delays = samples(ExponentialBackoff(10, 60, random.Random(7)), 10)
        assert min(delays) >= 30
        assert max(delays) == 60

    @pytest.mark.parametrize("receive_count", [31, 64, 1_000, 10**9, sys.maxsize, 10**100])
    def test_huge_receive_counts_do_not_overflow(self, receive_count: int) -> None:
        delays = samples(ExponentialBackoff(2, 300, random.Random(7)), receive_count)
        assert all(isinstance(delay, int) for delay in delays)
        assert min(delays) >= 150
        assert max(delays) <= 300

    def test_huge_base_is_capped(self) -> None:
        delays = samples(ExponentialBackoff(1e308, 43_200, random.Random(7)), 1_000)
        assert min(delays) >= 21_600
        assert max(delays) <= 43_200

    @pytest.mark.parametrize("receive_count", [0, -1, -(10**9)])
    def test_receive_count_below_one_is_the_first_step(self, receive_count: int) -> None:
        delays = samples(ExponentialBackoff(10, 10_000, random.Random(7)), receive_count)
        assert min(delays) >= 5
        assert max(delays) <= 10

    def test_same_seed_same_delays(self) -> None:
        first = ExponentialBackoff(2, 300, random.Random(42))
        second = ExponentialBackoff(2, 300, random.Random(42))
        assert [first.seconds(n) for n in range(1, 50)] == [second.seconds(n) for n in range(1, 50)]

    def test_default_random_source(self) -> None:
        backoff = ExponentialBackoff(8, 300)
        delays = samples(backoff, 2)
        assert min(delays) >= 8
        assert max(delays) <= 16

    def test_sub_second_delays_round_to_zero(self) -> None:
        # The worker's own tests retry at once this way: visibility 0.
        assert set(samples(ExponentialBackoff(0.1, 0.1, random.Random(7)), 3)) == {0}

    def test_repr(self) -> None:
        assert repr(ExponentialBackoff(2.0, 300.0)) == "ExponentialBackoff(base=2.0, cap=300.0)"


class TestQueueTimeout:
    """A failed message comes back after the queue's visibility timeout, as on Lambda."""

    @pytest.mark.parametrize("receive_count", [1, 2, 10, 10**9])
    def test_returns_the_queue_timeout(self, receive_count: int) -> None:
        assert QueueTimeout(30).seconds(receive_count) == 30

    def test_repr(self) -> None:
        assert repr(QueueTimeout(30)) == "QueueTimeout(30)"


class TestRetryDelay:
    """Both policies are interchangeable retry delays."""

    def test_both_satisfy_the_protocol(self) -> None:
        policies: list[RetryDelay] = [ExponentialBackoff(1, 1, random.Random(0)), QueueTimeout(1)]
        assert [policy.seconds(1) for policy in policies] == [1, 1]
