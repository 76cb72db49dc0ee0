"""The memory budget for bodies held until their trailer checksum is known (gateway/bodybuffer.py)."""
from __future__ import annotations

from gateway.bodybuffer import MAX_HELD_BODY, BodyBuffer


def test_bodies_are_held_within_the_budget_and_released_after():
    buffer = BodyBuffer(10)
    with buffer.hold(6) as first:
        with buffer.hold(5) as second:
            assert (first, second, buffer.held) == (True, False, 6)
        with buffer.hold(4) as third:
            assert (third, buffer.held) == (True, 10)
    assert buffer.held == 0


def test_a_body_over_the_per_body_limit_or_empty_is_never_held():
    buffer = BodyBuffer(10 * MAX_HELD_BODY)
    with buffer.hold(MAX_HELD_BODY + 1) as large, buffer.hold(0) as empty:
        assert (large, empty, buffer.held) == (False, False, 0)


def test_a_zero_budget_holds_nothing():
    with BodyBuffer(0).hold(1) as held:
        assert held is False


def test_the_budget_is_released_when_the_write_fails():
    buffer = BodyBuffer(10)
    try:
        with buffer.hold(5):
            raise RuntimeError("upstream failed")
    except RuntimeError:
        pass
    assert buffer.held == 0
