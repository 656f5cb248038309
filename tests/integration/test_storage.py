"""Thumbnail fallback against a real S3 API (moto server): HEAD with SigV4, public or presigned URLs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backfill.adapters.storage import ObjectStorage, thumbnail_candidates
from backfill.adapters.transport import HttpClient
from backfill.core.sigv4 import Credentials
from tests.support.s3 import ACCESS_KEY, REGION, SECRET_KEY, moto_s3, s3_client

CREDS = Credentials(ACCESS_KEY, SECRET_KEY, REGION)


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    with moto_s3() as endpoint:
        client = s3_client(endpoint)
        client.create_bucket(Bucket="outputs")
        client.put_object(Bucket="outputs", Key="stills/poster.png", Body=b"png")
        client.put_object(Bucket="outputs", Key="clips/night.mp4", Body=b"mp4")
        client.put_object(Bucket="outputs", Key="clips/night.jpg", Body=b"jpg")
        client.put_object(Bucket="outputs", Key="clips/lonely.mp4", Body=b"mp4")
        yield endpoint, client


def test_thumbnail_candidates_image_itself_else_same_stem_images() -> None:
    """An image is its own thumbnail; a video looks for a sibling image with the same stem."""
    assert thumbnail_candidates("a/b.PNG") == ["a/b.PNG"]
    assert thumbnail_candidates("a/b.mp4")[:2] == ["a/b.jpg", "a/b.jpeg"]


async def test_image_artifact_is_its_own_thumbnail_with_public_base(
    s3: tuple[str, Any], http: HttpClient
) -> None:
    """With MINIO_PUBLIC_BASE_URL the thumbnail is a plain public URL on that base."""
    storage = ObjectStorage(http, s3[0], CREDS, "https://media.example.org", 3600)
    assert await storage.find_thumbnail("s3://outputs/stills/poster.png") == (
        "https://media.example.org/outputs/stills/poster.png"
    )


async def test_video_uses_sibling_image_via_a_working_presigned_url(
    s3: tuple[str, Any], http: HttpClient
) -> None:
    """Without a public base the URL is presigned, and fetching it returns the object."""
    storage = ObjectStorage(http, s3[0], CREDS, None, 3600)
    url = await storage.find_thumbnail("s3://outputs/clips/night.mp4")
    assert url is not None
    assert "/outputs/clips/night.jpg?" in url
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as discord:  # whoever fetches it is another client, not ours
        response = await discord.get(url)
    assert response.status_code == 200
    assert response.content == b"jpg"


async def test_no_image_no_thumbnail(s3: tuple[str, Any], http: HttpClient) -> None:
    """A video without a sibling image, a missing bucket or a non-s3 artifact: no thumbnail."""
    storage = ObjectStorage(http, s3[0], CREDS, None, 3600)
    assert await storage.find_thumbnail("s3://outputs/clips/lonely.mp4") is None
    assert await storage.find_thumbnail("s3://nobucket/x.png") is None
    assert await storage.find_thumbnail("https://cdn/x.png") is None
    assert await storage.find_thumbnail(None) is None


async def test_unreachable_storage_is_a_retryable_error(http: HttpClient) -> None:
    """Connection refused maps to UpstreamUnavailable naming the storage service."""
    from backfill.core.errors import UpstreamUnavailable
    from tests.support.natsserver import free_port

    storage = ObjectStorage(http, f"http://127.0.0.1:{free_port()}", CREDS, None, 3600)
    with pytest.raises(UpstreamUnavailable, match="storage"):
        await storage.find_thumbnail("s3://outputs/a.mp4")


async def test_a_bucket_outside_the_allowed_list_is_never_signed_for(
    s3: tuple[str, Any], http: HttpClient
) -> None:
    """A row naming another bucket (even one that exists) gets no thumbnail: no HEAD is signed, no URL is
    presigned, and the refusal is counted."""
    endpoint, client = s3
    client.create_bucket(Bucket="private")
    client.put_object(Bucket="private", Key="secret.png", Body=b"png")
    requests: list[str] = []
    refused: list[int] = []
    storage = ObjectStorage(
        http,
        endpoint,
        CREDS,
        None,
        3600,
        observe=lambda service, _status, _seconds: requests.append(service),
        buckets=frozenset({"outputs"}),
        refused=lambda: refused.append(1),
    )
    assert await storage.find_thumbnail("s3://private/secret.png") is None
    assert (requests, refused) == ([], [1])
    assert await storage.find_thumbnail("s3://outputs/stills/poster.png") is not None
    assert requests == ["storage"]


def test_the_allowed_buckets_default_to_pmoves_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from backfill.settings import StorageSettings

    monkeypatch.delenv("MINIO_THUMBNAIL_BUCKETS", raising=False)
    assert StorageSettings().thumbnail_buckets == frozenset({"outputs"})
    monkeypatch.setenv("MINIO_THUMBNAIL_BUCKETS", "outputs,stills")
    assert StorageSettings().thumbnail_buckets == frozenset({"outputs", "stills"})
