"""Constants and request helpers shared by the PostgrestDouble tests."""

from __future__ import annotations

from typing import Any

import httpx

KEY = "service-role-key"
HEADERS = {"apikey": KEY, "Authorization": f"Bearer {KEY}"}
REPRESENT = {"Prefer": "return=representation"}


async def select(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/studio_board", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]
