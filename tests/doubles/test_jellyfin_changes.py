"""JellyfinDouble: "what changed since T", as Jellyfin's `GET /Items` answers it (docs/upstreams.md §2).

`minDateLastSaved` / `minDateLastSavedForUser` filter on when Jellyfin last saved an item (never set by
the creation alone); up to 10.10 the SQL compares both with the ForUser value, so `minDateLastSaved` alone
matches nothing. `sortBy=DateCreated&sortOrder=Descending` lists the newest additions first, and
`DateCreated` is in a listing's DTO only when asked for with `fields=`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.serve import serve
from tests.doubles.jellyfin_setup import AUTH, KEY, PROBLEM, SERVER, USER, list_items, names
from tests.support.clock import ServerClock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def clock() -> ServerClock:
    return ServerClock(T0)


@pytest.fixture(params=["10.10.7", "10.11.6"])
def library(request: pytest.FixtureRequest, clock: ServerClock) -> JellyfinDouble:
    """An old item, one added an hour later, one created but never saved, one edited later."""
    double = JellyfinDouble(KEY, USER, SERVER, seed=3, version=request.param, clock=clock)
    double.add_item("Old Film")
    double.add_item("Edited Film")
    clock.now = T0 + timedelta(hours=1)
    double.add_item("New Film")
    double.add_item("Half Scanned", saved=False)
    clock.now = T0 + timedelta(hours=2)
    (edited,) = [item for item in double.items.values() if item["Name"] == "Edited Film"]
    double.save_item(edited["Id"], Name="Edited Film (Director's Cut)")
    return double


@pytest.fixture
async def http(library: JellyfinDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(library.app()) as url, httpx.AsyncClient(base_url=url, headers=AUTH) as client:
        yield client


async def test_both_saved_filters_list_what_was_added_or_edited_since_on_every_version(
    http: httpx.AsyncClient,
) -> None:
    """With both parameters, every version lists the items saved at or after T, never one only created."""
    since = stamp(T0 + timedelta(minutes=30))
    listing = await list_items(http, minDateLastSaved=since, minDateLastSavedForUser=since)
    assert sorted(names(listing)) == ["Edited Film (Director's Cut)", "New Film"]
    assert listing["TotalRecordCount"] == 2


async def test_min_date_last_saved_alone_matches_nothing_up_to_10_10(
    library: JellyfinDouble, http: httpx.AsyncClient
) -> None:
    """10.9/10.10 bind the clause to the ForUser parameter, NULL when only this one is sent; 10.11 fixed it."""
    listing = await list_items(http, minDateLastSaved=stamp(T0 + timedelta(minutes=30)))
    expected = [] if library.version.startswith("10.10") else ["Edited Film (Director's Cut)", "New Film"]
    assert sorted(names(listing)) == expected


async def test_saved_filter_bound_is_inclusive(http: httpx.AsyncClient) -> None:
    """An item saved exactly at T is listed (>=)."""
    since = stamp(T0 + timedelta(hours=2))
    listing = await list_items(http, minDateLastSaved=since, minDateLastSavedForUser=since)
    assert names(listing) == ["Edited Film (Director's Cut)"]


async def test_newest_additions_first_with_date_created_only_when_asked(http: httpx.AsyncClient) -> None:
    """`sortBy=DateCreated&sortOrder=Descending`: the latest additions lead; `DateCreated` only with fields=."""
    listing = await list_items(http, sortBy="DateCreated", sortOrder="Descending", fields="DateCreated")
    dates = [item["DateCreated"] for item in listing["Items"]]
    assert dates == sorted(dates, reverse=True)
    assert names(listing)[:2] == ["Half Scanned", "New Film"]  # same second: then by name
    assert dates[0] == "2026-03-01T13:00:00.0000000Z"
    bare = await list_items(http, sortBy="DateCreated", sortOrder="Descending")
    assert all("DateCreated" not in item for item in bare["Items"])


async def test_unknown_sort_names_are_dropped_not_refused(http: httpx.AsyncClient) -> None:
    """ASP.NET's comma-list binder skips a value its enum cannot read: the default order stays."""
    listing = await list_items(http, sortBy="NoSuchSort", sortOrder="Sideways")
    assert names(listing) == sorted(names(listing), key=str.casefold)


async def test_a_malformed_saved_date_is_400_problem_json(http: httpx.AsyncClient) -> None:
    """`minDateLastSaved` is a DateTime?: a value model binding cannot read is a validation error."""
    response = await http.get(
        "/Items", params={"userId": USER, "recursive": "true", "minDateLastSaved": "yesterday"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["errors"] == {"minDateLastSaved": ["The value 'yesterday' is not valid."]}


async def test_the_saved_date_never_appears_in_a_dto(http: httpx.AsyncClient) -> None:
    """DateLastSaved is internal: not in listings with every field, not in a single-item answer."""
    listing = await list_items(http, fields="DateCreated,Path,Tags")
    assert all(
        not any(key.startswith("_") or key == "DateLastSaved" for key in item) for item in listing["Items"]
    )
    one = await http.get(f"/Items/{listing['Items'][0]['Id']}", params={"userId": USER})
    assert "DateCreated" in one.json() and "DateLastSaved" not in one.json()
