"""merged_meta: defaults || meta || patch, and a meta that is not an object is a conflict, not a merge."""

from __future__ import annotations

import pytest

from backfill.core.catalog import merged_meta
from backfill.core.errors import CatalogConflict
from backfill.core.model import Row
from backfill.core.payload import MetaPatch

PATCH = MetaPatch(patch={"jellyfin_public_url": "https://w/x"}, defaults={"publish_event_sent_at": "t0"})


def test_patch_wins_defaults_fill_only_missing_keys_and_null_meta_starts_empty() -> None:
    assert merged_meta({"publish_event_sent_at": "old", "k": 1}, PATCH) == {
        "publish_event_sent_at": "old",
        "k": 1,
        "jellyfin_public_url": "https://w/x",
    }
    assert merged_meta(None, PATCH) == {"publish_event_sent_at": "t0", "jellyfin_public_url": "https://w/x"}


@pytest.mark.parametrize("meta", [["a"], "text", 3])
def test_a_meta_that_is_not_an_object_is_a_conflict(meta: object) -> None:
    with pytest.raises(CatalogConflict, match="not a JSON object"):
        merged_meta(meta, PATCH)


@pytest.mark.parametrize(
    ("meta", "kind"), [(["a"], "an array"), ("text", "a string"), (True, "a boolean"), (2.5, "a number")]
)
def test_rows_say_what_their_meta_is_when_it_is_not_an_object(meta: object, kind: str) -> None:
    problem = Row(id=1, meta=meta).meta_object_problem
    assert problem is not None and problem.startswith(f"meta is {kind}, not a JSON object")
    assert Row(id=1, meta={}).meta_object_problem is None and Row(id=1).meta_object_problem is None
