"""Constants and request helpers shared by the JellyfinDouble tests."""

from __future__ import annotations

from typing import Any

import httpx

KEY = "0123456789abcdef0123456789abcdef"
USER = "6f1c8a0e2b7d4c3f9a5e1d2c3b4a5f60"
SERVER = "c0ffee00c0ffee00c0ffee00c0ffee00"
CLIENT = 'Client="backfill", Device="ci", DeviceId="1", Version="0.1"'
AUTH = {"Authorization": f'MediaBrowser {CLIENT}, Token="{KEY}"'}
PROBLEM = "application/problem+json"


async def get_item(client: httpx.AsyncClient, item_id: str, **params: str) -> httpx.Response:
    return await client.get(f"/Items/{item_id}", params={"userId": USER, **params})


async def list_items(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/Items", params={"userId": USER, "recursive": "true", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def names(listing: dict[str, Any]) -> list[str]:
    return [item["Name"] for item in listing["Items"]]
