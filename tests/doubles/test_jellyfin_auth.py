"""JellyfinDouble: credentials, the open image endpoint, URL size and injected faults (docs/upstreams.md §2)."""

from __future__ import annotations

import time

import httpx
import pytest

from backfill_doubles.jellyfin import PNG, JellyfinDouble
from backfill_doubles.serve import serve
from tests.doubles.jellyfin_setup import AUTH, KEY, SERVER, USER, get_item


@pytest.mark.parametrize(
    "header",
    [
        f'MediaBrowser Token="{KEY}"',
        f'MediaBrowser Client="x", Device="y", Token="{KEY}", Version="1"',
        f"mediabrowser token={KEY}, client=x",
    ],
)
async def test_mediabrowser_authorization_header_is_accepted(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient, header: str
) -> None:
    """`Authorization: MediaBrowser Token=...` works with any other parameters around it."""
    item = jellyfin.add_item("Alien", year=1979)
    response = await jellyfin_http.get(
        f"/Items/{item['Id']}", params={"userId": USER}, headers={"Authorization": header}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"X-Emby-Token": KEY}, {}),
        ({}, {"api_key": KEY}),
        ({"X-Emby-Authorization": f'MediaBrowser Token="{KEY}"'}, {}),
        ({"Authorization": f'Emby Token="{KEY}"'}, {}),
    ],
    ids=["x-emby-token", "api_key", "x-emby-authorization", "emby-scheme"],
)
async def test_legacy_credentials_are_rejected_unless_legacy_auth(
    headers: dict[str, str], params: dict[str, str]
) -> None:
    """X-Emby-Token / api_key are refused by 12.0 defaults and accepted with legacy auth (10.11)."""
    for legacy, expected in ((False, 401), (True, 200)):
        double = JellyfinDouble(KEY, USER, SERVER, legacy_auth=legacy)
        item = double.add_item("Alien")
        async with serve(double.app()) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.get(
                f"/Items/{item['Id']}", params={"userId": USER, **params}, headers=headers
            )
        assert response.status_code == expected, legacy


async def test_apikey_query_parameter_is_accepted_without_legacy_auth(jellyfin: JellyfinDouble) -> None:
    """`ApiKey=` (not `api_key=`) is read by every release since 10.8, legacy switch or not."""
    async with serve(jellyfin.app()) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/Items", params={"userId": USER, "ApiKey": KEY})
    assert response.status_code == 200


@pytest.mark.parametrize("header", [None, 'MediaBrowser Token="wrong"', f'Bearer Token="{KEY}"'])
async def test_missing_or_wrong_token_is_401(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient, header: str | None
) -> None:
    """No token, a wrong token or another scheme gets 401 and is counted."""
    headers = {} if header is None else {"Authorization": header}
    jellyfin_http.headers.pop("Authorization")
    response = await jellyfin_http.get("/Items", params={"userId": USER}, headers=headers)
    assert response.status_code == 401
    assert jellyfin.calls["unauthorized"] == 1


async def test_image_needs_no_auth_and_is_a_png(jellyfin: JellyfinDouble) -> None:
    """GET /Items/{id}/Images/Primary answers without credentials (usable as a Discord thumbnail)."""
    item = jellyfin.add_item("Alien")
    async with serve(jellyfin.app()) as url, httpx.AsyncClient(base_url=url) as anonymous:
        params = {"tag": item["ImageTags"]["Primary"], "maxWidth": "320"}
        response = await anonymous.get(f"/Items/{item['Id']}/Images/Primary", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == PNG
    assert PNG.startswith(b"\x89PNG\r\n\x1a\n")


async def test_image_of_item_without_primary_is_404(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """An item with no primary image has no image URL to give Discord."""
    item = jellyfin.add_item("Untitled", image=False)
    assert (await jellyfin_http.get(f"/Items/{item['Id']}/Images/Primary")).status_code == 404


async def test_url_over_8_kb_is_414(jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient) -> None:
    """An ids= batch that pushes the URL past ~8 KB is refused; 100 ids fit."""
    fitting = ",".join(jellyfin.add_item(f"M{index}")["Id"] for index in range(100))
    assert (await jellyfin_http.get("/Items", params={"userId": USER, "ids": fitting})).status_code == 200
    too_many = ",".join([fitting] * 3)
    assert (await jellyfin_http.get("/Items", params={"userId": USER, "ids": too_many})).status_code == 414


async def test_fail_next_answers_500_then_recovers(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """fail_next=N makes the next N authenticated calls 500 and counts them."""
    item = jellyfin.add_item("Alien")
    jellyfin.fail_next = 2
    statuses = [(await get_item(jellyfin_http, item["Id"])).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert jellyfin.injected["fail"] == 2


async def test_fail_rate_is_deterministic_for_a_seed() -> None:
    """Two doubles with the same seed fail the same calls."""
    runs = []
    for _ in range(2):
        double = JellyfinDouble(KEY, USER, SERVER, seed=3)
        double.fail_rate = 0.5
        async with serve(double.app()) as url, httpx.AsyncClient(base_url=url, headers=AUTH) as client:
            runs.append(
                [(await client.get("/Items", params={"userId": USER})).status_code for _ in range(12)]
            )
    assert runs[0] == runs[1]
    assert {500, 200} == set(runs[0])


async def test_hang_provokes_a_client_timeout(
    jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient
) -> None:
    """hang_rate/hang_seconds hold the answer long enough for a client timeout."""
    jellyfin.hang_rate, jellyfin.hang_seconds = 1.0, 5.0
    with pytest.raises(httpx.ReadTimeout):
        await jellyfin_http.get("/Items", params={"userId": USER}, timeout=0.1)
    assert jellyfin.injected["hang"] == 1


async def test_latency_delays_each_call(jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient) -> None:
    """latency adds that many seconds to a call."""
    jellyfin.latency = 0.05
    started = time.monotonic()
    await jellyfin_http.get("/Items", params={"userId": USER})
    assert time.monotonic() - started >= 0.05


async def test_requests_are_logged(jellyfin: JellyfinDouble, jellyfin_http: httpx.AsyncClient) -> None:
    """requests records (method, path, query) of every call, answered or not."""
    await jellyfin_http.get("/Items", params={"userId": USER, "searchTerm": "x"})
    assert jellyfin.requests == [("GET", "/Items", {"userId": USER, "searchTerm": "x"})]
