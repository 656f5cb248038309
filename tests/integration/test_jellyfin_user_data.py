"""The Jellyfin adapter reads the configured user's `UserData` (played or not) on every path: by id,
batched by ids, and in a title search (listings ask for it with `enableUserData=true`)."""

from __future__ import annotations

from backfill.adapters.jellyfin import JellyfinClient
from backfill.adapters.transport import HttpClient
from backfill_doubles.jellyfin import JellyfinDouble
from backfill_doubles.serve import serve

KEY, USER, SERVER = "jf-key", "ab" * 16, "cd" * 16


async def test_played_is_read_by_id_by_ids_and_by_search(http: HttpClient) -> None:
    double = JellyfinDouble(KEY, USER, SERVER)
    seen = double.add_item("Seen Before", played=True)
    fresh = double.add_item("Seen Never")
    async with serve(double.app()) as url:
        client = JellyfinClient(http, url, KEY, USER)
        by_id = await client.get_item(seen["Id"])
        assert by_id is not None and by_id.played
        batched = await client.get_items([seen["Id"], fresh["Id"]])
        assert {item.name: item.played for item in batched.values()} == {
            "Seen Before": True,
            "Seen Never": False,
        }
        found = await client.search("Seen", None, 10)
        assert {item.name: item.played for item in found} == {"Seen Before": True, "Seen Never": False}
    listings = [query for _, path, query in double.requests if path == "/Items"]
    assert len(listings) == 2 and all(query.get("enableUserData") == "true" for query in listings)
    assert all(query.get("userId") == USER for _, _, query in double.requests)
