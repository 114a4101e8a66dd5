"""Liveness and readiness verdicts, from the worker's state (pure logic, a fake clock)."""

from __future__ import annotations

from worker.health import Health


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def healthy(clock: Clock) -> Health:
    health = Health(loop_block_threshold=10, clock=clock)
    health.pollers_expected = health.pollers_running = 2
    health.slots = 4
    health.queue_reached = True
    return health


class TestLiveness:
    """Liveness fails only for what a restart cures."""

    def test_a_turning_loop_with_its_pollers_is_live(self) -> None:
        verdict = healthy(Clock()).liveness()
        assert verdict.ok
        assert verdict.problems == ()

    def test_a_blocked_loop_is_not(self) -> None:
        clock = Clock()
        health = healthy(clock)
        clock.now += 10.5
        verdict = health.liveness()
        assert not verdict.ok
        assert verdict.problems == ("event loop blocked for 10 s",)
        health.beat()
        assert health.liveness().ok

    def test_a_dead_poller_fails_liveness(self) -> None:
        health = healthy(Clock())
        health.pollers_running = 1
        assert health.liveness().problems == ("1 of 2 pollers died",)

    def test_pollers_ending_while_draining_are_expected(self) -> None:
        health = healthy(Clock())
        health.draining = True
        health.pollers_running = 0
        assert health.liveness().ok

    def test_every_slot_held_by_an_abandoned_handler(self) -> None:
        health = healthy(Clock())
        health.abandoned = lambda: 3
        assert health.liveness().ok
        health.abandoned = lambda: 4
        assert health.liveness().problems == (
            "all 4 handler slots held by handlers past their budget",
        )


class TestReadiness:
    """Ready once the queue was reached, and until draining starts."""

    def test_not_ready_before_the_queue_is_reached(self) -> None:
        health = Health(loop_block_threshold=10)
        assert health.readiness().problems == ("queue not reached yet",)

    def test_ready_then_draining(self) -> None:
        health = healthy(Clock())
        assert health.readiness().ok
        health.draining = True
        assert health.readiness().problems == ("draining",)
