"""PmovesYtDouble answers `/yt/search` as PMOVES.yt does: 400 without a query, 502 when Hi-RAG fails,
results filtered by the threshold, best first, at most `limit` (docs/upstreams.md §8)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from backfill_doubles.pmoves_yt import PmovesYtDouble, similarity
from backfill_doubles.serve import serve


@pytest.fixture
def yt() -> PmovesYtDouble:
    double = PmovesYtDouble()
    double.add_video("a1", "Night Drive (3)", "Night Drive: " + "the road at night " * 40)
    double.add_video("a2", "Night Drive (3) behind the scenes")
    double.add_video("b1", "Golden Harbor")
    double.add_video("c1", "Night Drive (3)", namespace="other")
    return double


@pytest.fixture
async def http(yt: PmovesYtDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(yt.app()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def test_results_at_or_above_the_threshold_best_first_in_the_namespace(
    yt: PmovesYtDouble, http: httpx.AsyncClient
) -> None:
    """The answer's shape, in the default namespace `pmoves`, 0.70 by default."""
    response = await http.post("/yt/search", json={"query": "Night Drive (3)"})
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"ok", "query", "results", "total"}
    assert (answer["ok"], answer["query"], answer["total"]) == (True, "Night Drive (3)", 2)
    assert [r["video_id"] for r in answer["results"]] == ["a1", "a2"]
    first = answer["results"][0]
    assert set(first) == {"video_id", "title", "url", "similarity", "excerpt", "timestamp"}
    assert first["similarity"] == 1.0 and first["url"] == "https://www.youtube.com/watch?v=a1"
    assert len(first["excerpt"]) > 200  # longer than what a stored entry keeps
    assert answer["results"][1]["similarity"] == similarity(
        "Night Drive (3)", "Night Drive (3) behind the scenes"
    )
    assert yt.answers == [answer]


async def test_threshold_limit_and_namespace_narrow_the_results(http: httpx.AsyncClient) -> None:
    strict = await http.post("/yt/search", json={"query": "Night Drive (3)", "threshold": 0.9})
    assert [r["video_id"] for r in strict.json()["results"]] == ["a1"]
    one = await http.post("/yt/search", json={"query": "Night Drive (3)", "limit": 1, "threshold": 0.0})
    assert one.json()["total"] == 1
    other = await http.post("/yt/search", json={"query": "Night Drive (3)", "namespace": "other"})
    assert [r["video_id"] for r in other.json()["results"]] == ["c1"]
    nothing = await http.post("/yt/search", json={"query": "Quiet Orbit"})
    assert nothing.json() == {"ok": True, "query": "Quiet Orbit", "results": [], "total": 0}


@pytest.mark.parametrize("body", [{}, {"query": ""}, {"query": "   "}, {"query": None}, {"limit": 5}])
async def test_a_missing_or_blank_query_is_400_query_required(http: httpx.AsyncClient, body: dict) -> None:
    response = await http.post("/yt/search", json=body)
    assert (response.status_code, response.json()) == (400, {"detail": "query required"})


@pytest.mark.parametrize("body", [["Night Drive (3)"], {"query": "x", "limit": "five"}])
async def test_a_body_that_does_not_validate_is_422(http: httpx.AsyncClient, body: object) -> None:
    response = await http.post("/yt/search", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


async def test_a_failing_hi_rag_backend_is_502(yt: PmovesYtDouble, http: httpx.AsyncClient) -> None:
    """`fail_next` / `fail_rate` answer 502, and no answer is recorded for them."""
    yt.fail_next = 1
    failed = await http.post("/yt/search", json={"query": "Night Drive (3)"})
    assert failed.status_code == 502 and "hi-rag" in failed.json()["detail"]
    assert (await http.post("/yt/search", json={"query": "Night Drive (3)"})).status_code == 200
    assert len(yt.requests) == 2 and len(yt.answers) == 1
