"""JellyfinDouble: item lookups and `/Items` queries, traps included (docs/upstreams.md §2)."""

from __future__ import annotations

import httpx

from backfill_doubles.jellyfin import JellyfinDouble
from tests.doubles.jellyfin_setup import KEY, PROBLEM, SERVER, USER, get_item, list_items, names


async def test_get_item_without_user_id_is_400_text(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """An API key has no user: `/Items/{id}` without userId is 400 text/plain."""
    item = jellyfin.add_item("Alien")
    response = await jellyfin_http.get(f"/Items/{item['Id']}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")


async def test_unknown_user_is_404_problem_json(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """A userId that is not a known user is 404 problem+json."""
    item = jellyfin.add_item("Alien")
    response = await jellyfin_http.get(f"/Items/{item['Id']}", params={"userId": "f" * 32})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_missing_item_is_404_problem_json(jellyfin_http: httpx.AsyncClient) -> None:
    """A well-formed id of no item is 404 problem+json (RFC 9110 §15.5.5)."""
    response = await get_item(jellyfin_http, "a" * 32)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json() == {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        "title": "Not Found",
        "status": 404,
    }


async def test_deleted_item_is_404(jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient) -> None:
    """delete_item() makes later lookups 404."""
    item = jellyfin.add_item("Alien")
    jellyfin.delete_item(item["Id"])
    assert (await get_item(jellyfin_http, item["Id"])).status_code == 404


async def test_malformed_item_id_is_400_problem_json(jellyfin_http: httpx.AsyncClient) -> None:
    """An id that is not a GUID is 400 problem+json naming `itemId`."""
    response = await get_item(jellyfin_http, "not-a-guid")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["title"] == "One or more validation errors occurred."
    assert body["errors"] == {"itemId": ["The value 'not-a-guid' is not valid."]}


async def test_dashed_uppercase_guid_finds_the_item(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """GUIDs bind in dashed and upper-case form too; the DTO Id is 32 lowercase hex."""
    item = jellyfin.add_item("Alien")
    hexid = item["Id"]
    dashed = f"{hexid[:8]}-{hexid[8:12]}-{hexid[12:16]}-{hexid[16:20]}-{hexid[20:]}".upper()
    response = await get_item(jellyfin_http, dashed)
    assert response.json()["Id"] == hexid


async def test_all_zero_id_returns_the_root_folder_not_404(jellyfin_http: httpx.AsyncClient) -> None:
    """The all-zero GUID is valid and answers 200 with the root folder: the trap."""
    response = await get_item(jellyfin_http, "0" * 32)
    assert response.status_code == 200
    assert response.json()["Type"] == "AggregateFolder"
    assert response.json()["Name"] == "root"


async def test_item_dto_is_pascal_case_with_nulls_omitted(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """The DTO carries every field, PascalCase; unset ones are absent, not null."""
    item = jellyfin.add_item(
        "Alien", run_time_ticks=70_000_000_000, premiere_date="1979-05-25", tags=["scifi"]
    )
    bare = jellyfin.add_item("Untitled", image=False)
    dto = (await get_item(jellyfin_http, item["Id"])).json()
    assert dto["PremiereDate"] == "1979-05-25T00:00:00.0000000Z"
    assert dto["ProductionYear"] == 1979
    assert dto["RunTimeTicks"] == 70_000_000_000
    assert dto["ServerId"] == SERVER
    assert set(dto["ImageTags"]) == {"Primary"}
    assert dto["Tags"] == ["scifi"]
    assert {"Path", "Genres", "ProviderIds", "UserData"} <= set(dto)
    bare_dto = (await get_item(jellyfin_http, bare["Id"])).json()
    assert "PremiereDate" not in bare_dto
    assert "RunTimeTicks" not in bare_dto
    assert "Primary" not in bare_dto["ImageTags"]


async def test_search_ranks_exact_then_prefix_then_contains(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """searchTerm is a case-insensitive substring match ranked exact > prefix > contains."""
    for name in ("The Alien Diaries", "Aliens", "alien", "Predator"):
        jellyfin.add_item(name)
    assert names(await list_items(jellyfin_http, searchTerm="ALIEN")) == [
        "alien",
        "Aliens",
        "The Alien Diaries",
    ]


async def test_listing_without_recursive_returns_only_libraries(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """Without recursive=true `/Items` lists the libraries and ignores searchTerm: the trap."""
    jellyfin.add_item("Alien")
    response = await jellyfin_http.get("/Items", params={"userId": USER, "searchTerm": "Alien"})
    listing = response.json()
    assert names(listing) == ["Movies"]
    assert listing["Items"][0]["Type"] == "CollectionFolder"


async def test_listing_without_user_id_is_400(jellyfin_http: httpx.AsyncClient) -> None:
    """`/Items` with the API key also needs userId."""
    response = await jellyfin_http.get("/Items", params={"recursive": "true"})
    assert response.status_code == 400


async def test_years_filter_matches_production_year(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """years=a,b keeps items whose ProductionYear is one of them."""
    jellyfin.add_item("Alien", year=1979)
    jellyfin.add_item("Aliens", year=1986)
    jellyfin.add_item("Alien 3", year=1992)
    assert names(await list_items(jellyfin_http, years="1979,1992")) == ["Alien", "Alien 3"]


async def test_premiere_date_range_is_inclusive(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """min/maxPremiereDate bound PremiereDate inclusively; items without one are left out."""
    jellyfin.add_item("Early", premiere_date="2021-03-03")
    jellyfin.add_item("Start", premiere_date="2021-03-04")
    jellyfin.add_item("End", premiere_date="2021-03-10")
    jellyfin.add_item("Late", premiere_date="2021-03-11")
    jellyfin.add_item("Undated")
    listing = await list_items(
        jellyfin_http, minPremiereDate="2021-03-04T00:00:00Z", maxPremiereDate="2021-03-10"
    )
    assert names(listing) == ["End", "Start"]


async def test_listing_sends_optional_fields_only_when_asked(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """Path, Tags, Genres and ProviderIds appear in listings only when named in fields=."""
    jellyfin.add_item("Alien", tags=["scifi"])
    plain = (await list_items(jellyfin_http))["Items"][0]
    full = (await list_items(jellyfin_http, fields="Path,Tags,Genres,ProviderIds"))["Items"][0]
    assert not {"Path", "Tags", "Genres", "ProviderIds"} & set(plain)
    assert {"Path", "Tags", "Genres", "ProviderIds"} <= set(full)


async def test_total_record_count_is_counted_before_limit(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """TotalRecordCount counts every match; limit and startIndex only page."""
    for index in range(5):
        jellyfin.add_item(f"Movie {index}")
    listing = await list_items(jellyfin_http, limit="2", startIndex="1")
    assert names(listing) == ["Movie 1", "Movie 2"]
    assert listing["TotalRecordCount"] == 5
    assert listing["StartIndex"] == 1


async def test_ids_drop_invalid_skip_missing_and_do_not_keep_order(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """ids=: invalid ids are dropped, missing ones absent, results not in request order."""
    zulu, alpha, _ = (jellyfin.add_item(name) for name in ("Zulu", "Alpha", "Other"))
    ids = ",".join([zulu["Id"], "bogus", "b" * 32, alpha["Id"]])
    listing = await list_items(jellyfin_http, ids=ids)
    assert names(listing) == ["Alpha", "Zulu"]


async def test_ids_all_invalid_is_an_unfiltered_listing(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """ids= with only invalid ids filters nothing: every item comes back (the trap)."""
    for name in ("A", "B", "C"):
        jellyfin.add_item(name)
    listing = await list_items(jellyfin_http, ids="bogus,also-bogus")
    assert listing["TotalRecordCount"] == 3


def test_add_item_ids_are_stable_for_a_seed() -> None:
    """Ids come from the seeded RNG: same seed, same ids, 32 lowercase hex."""
    first = [JellyfinDouble(KEY, USER, SERVER, seed=1).add_item("A")["Id"] for _ in range(2)]
    assert first[0] == first[1]
    assert len(first[0]) == 32
    assert first[0] == first[0].lower()
    assert first[0] != JellyfinDouble(KEY, USER, SERVER, seed=2).add_item("A")["Id"]
