"""The token bucket behind the global republish pace."""

from __future__ import annotations

import pytest

from backfill.core.pace import BucketState, PaceConfig, take, take_many

CONFIG = PaceConfig(per_minute=300, burst=5)  # 5 per second


def run(times: list[float]) -> list[float]:
    """Take a token at each time; returns the waits (0 when allowed)."""
    state, waits = None, []
    for now in times:
        state, wait = take(state, now, CONFIG)
        waits.append(wait)
    return waits


def test_a_fresh_bucket_allows_one_burst_then_makes_callers_wait() -> None:
    """Five at once are allowed, the sixth waits one token's worth (0.2 s at 5/s)."""
    waits = run([0.0] * 6)
    assert waits[:5] == [0.0] * 5
    assert waits[5] == pytest.approx(0.2)


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    """After a long idle time the bucket holds `burst` tokens, not more."""
    state, _ = take(BucketState(tokens=0.0, updated=0.0), 100.0, CONFIG)
    assert state.tokens == pytest.approx(4.0)  # refilled to 5, one taken


@pytest.mark.parametrize("window", [1.0, 2.0, 10.0])
def test_callers_that_honour_the_waits_never_exceed_rate_times_window_plus_burst(window: float) -> None:
    """Greedy callers retrying after each wait: at most burst + rate * window grants in any window."""
    state, now, grants = None, 0.0, []
    while now < 30.0:
        state, wait = take(state, now, CONFIG)
        if wait == 0.0:
            grants.append(now)
        now += max(wait, 0.001)
    worst = max(sum(1 for g in grants if start <= g < start + window) for start in grants)
    assert worst <= CONFIG.burst + CONFIG.per_second * window + 1e-9
    assert len(grants) == pytest.approx(CONFIG.burst + 30 * CONFIG.per_second, abs=1)


def test_clock_going_backwards_does_not_mint_tokens() -> None:
    """A replica with a slower clock refills nothing rather than a negative amount."""
    state, _ = take(BucketState(tokens=0.5, updated=10.0), 5.0, CONFIG)
    assert state.tokens == pytest.approx(0.5)


def test_take_many_takes_whole_tokens_up_to_what_is_wanted() -> None:
    """3.7 tokens and 5 wanted: 3 taken, 0.7 left; none free: nothing taken and the wait for one."""
    state, got, wait = take_many(BucketState(tokens=3.7, updated=0.0), 0.0, CONFIG, 5)
    assert (got, wait) == (3, 0.0)
    assert state.tokens == pytest.approx(0.7)
    state, got, wait = take_many(state, 0.0, CONFIG, 5)
    assert got == 0 and wait == pytest.approx(0.06)  # 0.3 token at 5/s
    assert state.tokens == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("per_minute", "burst", "most"),
    [(30, 5, 1), (300, 5, 2), (6000, 5, 5), (6000, 100, 25), (100_000, 100_000, 417)],
)
def test_one_take_is_bounded_by_a_quarter_second_of_the_rate_and_the_burst(
    per_minute: float, burst: int, most: int
) -> None:
    assert PaceConfig(per_minute, burst).most_per_take == most
