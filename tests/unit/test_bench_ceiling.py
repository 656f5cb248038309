"""Which raw ceiling the benchmark's target compares one worker with."""

from __future__ import annotations

from bench.run import best_ceiling

CEILINGS = {"16": 450.0, "16-batched": 880.0, "128": 1400.0, "128-batched": 3350.0, "256-batched": 6200.0}


def test_the_target_ceiling_is_the_best_up_to_the_workers_concurrency() -> None:
    assert best_ceiling(CEILINGS, 128) == "128-batched"
    assert best_ceiling(CEILINGS, 64) == "16-batched"


def test_without_a_bound_or_below_every_ceiling_the_best_of_all_counts() -> None:
    assert best_ceiling(CEILINGS) == "256-batched"
    assert best_ceiling(CEILINGS, 8) == "256-batched"
