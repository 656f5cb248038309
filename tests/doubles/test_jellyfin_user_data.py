"""The user's `UserData` on items (whether it has played them), in lookups and listings alike."""

from __future__ import annotations

import httpx

from backfill_doubles.jellyfin import JellyfinDouble
from tests.doubles.jellyfin_setup import get_item, list_items


async def test_user_data_says_played_in_a_lookup_and_in_a_listing(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    played = jellyfin.add_item("Seen It", played=True)
    fresh = jellyfin.add_item("Not Yet")
    assert (await get_item(jellyfin_http, played["Id"])).json()["UserData"]["Played"] is True
    listing = await list_items(jellyfin_http, searchTerm="e", enableUserData="true")
    by_name = {item["Name"]: item["UserData"]["Played"] for item in listing["Items"]}
    assert by_name == {"Seen It": True, "Not Yet": False}
    assert (await get_item(jellyfin_http, fresh["Id"])).json()["UserData"]["PlayCount"] == 0


async def test_enable_user_data_false_leaves_it_out_of_a_listing(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    jellyfin.add_item("Seen It", played=True)
    listing = await list_items(jellyfin_http, searchTerm="Seen", enableUserData="false")
    assert listing["Items"] and all("UserData" not in item for item in listing["Items"])
    assert "UserData" in (await list_items(jellyfin_http, searchTerm="Seen"))["Items"][0]
