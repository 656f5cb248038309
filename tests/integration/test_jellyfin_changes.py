"""The Jellyfin adapter asks what changed since a time: items saved since (both saved filters, so 10.10
answers too) and items added since (newest first), over real HTTP to the double on 10.10 and 10.11."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backfill.adapters import jellyfin
from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.transport import HttpClient
from backfill.core.errors import UpstreamError
from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.serve import serve
from tests.support.clock import ServerClock

KEY, USER, SERVER = "jf-key", "ab" * 16, "cd" * 16
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("version", ["10.10.7", "10.11.6"])
async def test_items_saved_or_added_since_are_listed_and_older_ones_not(
    http: HttpClient, version: str
) -> None:
    """An edit, a scanned addition and an addition not yet saved are changes; an untouched old item is not."""
    clock = ServerClock(T0)
    double = JellyfinDouble(KEY, USER, SERVER, version=version, clock=clock)
    old = double.add_item("Old Film")
    edited = double.add_item("Edited Film")
    clock.now = T0 + timedelta(hours=1)
    double.add_item("New Film", year=2024)
    double.add_item("Half Scanned", saved=False)
    double.save_item(edited["Id"], Name="Edited Film (Cut)")
    async with serve(double.app()) as url:
        changed = await JellyfinClient(http, url, KEY, USER).changed_since(T0 + timedelta(minutes=30))
    assert changed is not None
    assert sorted(item.name or "" for item in changed) == ["Edited Film (Cut)", "Half Scanned", "New Film"]
    assert old["Id"] not in {item.id for item in changed}
    new = next(item for item in changed if item.name == "New Film")
    assert new.production_year == 2024 and new.added_at == T0 + timedelta(hours=1)
    saved_query = next(q for _, _, q in double.requests if "minDateLastSaved" in q)
    assert saved_query["minDateLastSavedForUser"] == saved_query["minDateLastSaved"]


async def test_nothing_changed_costs_two_requests(http: HttpClient) -> None:
    """The idle answer: one saved-since listing and one newest-first listing, both empty of changes."""
    clock = ServerClock(T0)
    double = JellyfinDouble(KEY, USER, SERVER, clock=clock)
    for n in range(50):
        double.add_item(f"Film {n}")
    async with serve(double.app()) as url:
        changed = await JellyfinClient(http, url, KEY, USER).changed_since(T0 + timedelta(minutes=1))
    assert changed == []
    assert len([path for _, path, _ in double.requests if path == "/Items"]) == 2


async def test_more_changes_than_the_pages_hold_is_cannot_say(
    http: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CHANGES_PAGES pages the adapter stops and answers None: the caller must assume anything changed."""
    monkeypatch.setattr(jellyfin, "CHANGES_PAGE", 2)
    monkeypatch.setattr(jellyfin, "CHANGES_PAGES", 3)
    clock = ServerClock(T0)
    double = JellyfinDouble(KEY, USER, SERVER, clock=clock)
    clock.now = T0 + timedelta(hours=1)
    for n in range(7):
        double.add_item(f"Film {n}")
    async with serve(double.app()) as url:
        client = JellyfinClient(http, url, KEY, USER)
        assert await client.changed_since(T0) is None
        double.items = dict(list(double.items.items())[:6])
        assert len(await client.changed_since(T0) or []) == 6


async def test_a_server_error_is_an_upstream_error(http: HttpClient) -> None:
    """A 500 after the adapter's retries raises the project's error, never a library's."""
    double = JellyfinDouble(KEY, USER, SERVER)
    double.fail_rate = 1.0
    async with serve(double.app()) as url:
        with pytest.raises(UpstreamError):
            await JellyfinClient(http, url, KEY, USER).changed_since(T0)
