"""Object storage adapter for the thumbnail fallback (docs/upstreams.md §5): HEAD candidates, hand out a
public URL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import PurePosixPath

from backfill.adapters.transport import HttpClient, Observer, Upstream, no_observer
from backfill.core.sigv4 import Credentials, object_url, presign_get, signed_headers

SERVICE = "storage"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
log = logging.getLogger(__name__)


def split_s3_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith("s3://"):
        return None
    bucket, _, key = uri[len("s3://") :].partition("/")
    return (bucket, key) if bucket and key else None


def thumbnail_candidates(key: str) -> list[str]:
    """An image is its own thumbnail; otherwise a sibling image with the same stem."""
    path = PurePosixPath(key)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [key]
    stem = str(path.with_suffix(""))
    return [f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]


class ObjectStorage:
    def __init__(
        self,
        http: HttpClient,
        endpoint: str,
        creds: Credentials,
        public_base_url: str | None,
        presign_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        observe: Observer = no_observer,
        *,
        buckets: frozenset[str] = frozenset({"outputs"}),
        refused: Callable[[], None] = lambda: None,
    ) -> None:
        """`buckets`: the only buckets looked into; an artifact in any other gets no thumbnail and
        `refused()` is called (a metric)."""
        self._up = Upstream(http, SERVICE, observe)
        self._buckets = buckets
        self._refused = refused
        self._endpoint = endpoint.rstrip("/")
        self._creds = creds
        self._public_base = public_base_url.rstrip("/") if public_base_url else None
        self._presign_seconds = presign_seconds
        self._clock = clock

    async def exists(self, bucket: str, key: str) -> bool:
        url = object_url(self._endpoint, bucket, key)
        headers = signed_headers("HEAD", url, self._creds, self._clock())
        response = await self._up.read("HEAD", url, headers=headers)
        if response.status_code == 200:
            return True
        if response.status_code in (404, 403):  # 403 is what a missing key looks like without list rights
            return False
        self._up.check(response)
        return False

    def public_url(self, bucket: str, key: str) -> str:
        if self._public_base:
            return object_url(self._public_base, bucket, key)
        return presign_get(
            object_url(self._endpoint, bucket, key), self._creds, self._clock(), self._presign_seconds
        )

    async def find_thumbnail(self, artifact_uri: str | None) -> str | None:
        """A URL Discord can fetch for the artifact's thumbnail, or None."""
        location = split_s3_uri(artifact_uri or "")
        if location is None:
            return None
        bucket, key = location
        if bucket not in self._buckets:
            self._refused()
            log.info("thumbnail: bucket not allowed", extra={"bucket": bucket[:63]})
            return None
        for candidate in thumbnail_candidates(key):
            if await self.exists(bucket, candidate):
                return self.public_url(bucket, candidate)
        return None
