"""A realistic mixed catalog for the end-to-end tests and the demo, with the expected result per row.

Pure data: which Jellyfin items exist, which studio_board rows, which objects in storage, and what the
backfill must do with each row. Every path of the pipeline appears in it (see `KINDS`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

ADJECTIVES = ("Night", "Golden", "Quiet", "Electric", "Hidden", "Café", "Northern", "Paper", "Velvet", "Last")
NOUNS = ("Drive", "Harbor", "Signal", "Garden", "Archive", "Parade", "Circuit", "Lantern", "Studio", "Orbit")

# kind -> expected outcome. "republished" rows must end enriched; "untouched" rows must not change;
# "dlq:<reason>" rows must end in the dead letters with that reason and their row unchanged.
KINDS: dict[str, str] = {
    "by_id": "republished",
    "search": "republished",
    "search_dated": "republished",
    "stale_id": "republished",
    "storage_thumb": "republished",
    "no_thumb": "republished",
    "extra_keys": "republished",
    "metadata_image": "republished",
    "ambiguous": "dlq:ambiguous_match",
    "deleted": "dlq:jellyfin_not_found",
    "non_s3": "dlq:invalid_payload",
    "draft": "untouched",
    "already": "untouched",
}


@dataclass
class SeedItem:
    key: str  # stable handle used to link rows to items before ids exist
    name: str
    ticks: int | None
    year: int | None
    premiere: str | None
    image: bool
    deleted: bool = False


@dataclass
class SeedRow:
    kind: str
    title: str
    status: str
    content_url: str
    namespace: str | None
    meta: dict[str, Any]
    item_key: str | None  # the item the row must resolve to (None when it must not resolve)
    thumbnail: str | None  # "jellyfin" | "storage" | None

    @property
    def expect(self) -> str:
        return KINDS[self.kind]


@dataclass(frozen=True)
class SeedVideo:
    """A video in PMOVES.yt's transcript corpus."""

    video_id: str
    title: str
    transcript: str


@dataclass
class Seed:
    items: list[SeedItem] = field(default_factory=list)
    rows: list[SeedRow] = field(default_factory=list)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (bucket, key)
    videos: list[SeedVideo] = field(default_factory=list)  # PMOVES.yt's corpus

    def expected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.expect] = counts.get(row.expect, 0) + 1
        return counts


def _title(rng: random.Random, n: int) -> str:
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} ({n:04d})"


def _item(
    key: str, name: str, rng: random.Random, *, image: bool = True, year: int | None = None
) -> SeedItem:
    year = year or rng.randint(2019, 2025)
    premiere = f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00.0000000Z"
    return SeedItem(key, name, rng.randint(30, 7200) * 10_000_000, year, premiere, image)


def _row(kind: str, n: int, title: str, **extra: Any) -> SeedRow:
    video = f"s3://outputs/studio/{n:04d}/clip.mp4"
    meta: dict[str, Any] = {
        "tags": ["studio", f"batch-{n % 7}"],
        "publish_event_sent_at": "2025-06-01T10:00:00Z",
    }
    meta.update(extra.pop("meta", {}))
    fields: dict[str, Any] = {
        "status": "published",
        "content_url": video,
        "namespace": "pmoves",
        "item_key": None,
        "thumbnail": "jellyfin",
        **extra,
    }
    return SeedRow(kind=kind, title=title, meta=meta, **fields)


def _add_kind(seed: Seed, kind: str, n: int, rng: random.Random) -> None:
    title = _title(rng, n)
    key = f"item-{n}"
    if kind in ("by_id", "search", "extra_keys", "metadata_image", "draft", "already"):
        image = kind != "metadata_image"  # an image artifact is its own thumbnail
        seed.items.append(_item(key, title.upper() if kind == "search" else title, rng, image=image))
        meta: dict[str, Any] = {"jellyfin_item_id": key} if kind in ("by_id", "draft", "already") else {}
        if kind == "extra_keys":
            meta = {"other_service": {"keep": True, "n": n}, "slug": f"slug-{n}", "description": "kept"}
        if kind == "already":
            meta["jellyfin_public_url"] = "https://watch.example.org/web/#/details?id=old"
        row = _row(
            kind, n, title, meta=meta, item_key=key, status="draft" if kind == "draft" else "published"
        )
        if kind == "metadata_image":
            row.content_url = f"s3://outputs/stills/{n:04d}.png"
            row.thumbnail = "storage"
            seed.objects.append(("outputs", f"stills/{n:04d}.png"))
        seed.rows.append(row)
    elif kind == "search_dated":
        seed.items.append(_item(f"{key}-old", title, rng, year=2019))
        seed.items.append(_item(key, title, rng, year=2024))
        seed.rows.append(_row(kind, n, title, meta={"production_year": 2024}, item_key=key))
    elif kind == "stale_id":
        seed.items.append(_item(f"{key}-gone", f"{title} [removed]", rng))
        seed.items[-1].deleted = True
        seed.items.append(_item(key, title, rng))
        seed.rows.append(_row(kind, n, title, meta={"jellyfin_item_id": f"{key}-gone"}, item_key=key))
    elif kind in ("storage_thumb", "no_thumb"):
        seed.items.append(_item(key, title, rng, image=False))
        row = _row(kind, n, title, item_key=key, thumbnail="storage" if kind == "storage_thumb" else None)
        if kind == "storage_thumb":
            seed.objects.append(("outputs", f"studio/{n:04d}/clip.jpg"))
        seed.rows.append(row)
    elif kind == "ambiguous":
        seed.items.append(_item(f"{key}-a", title, rng))
        seed.items.append(_item(f"{key}-b", title, rng))
        seed.rows.append(_row(kind, n, title, thumbnail=None))
    elif kind == "deleted":
        seed.items.append(_item(key, title, rng))
        seed.items[-1].deleted = True
        seed.rows.append(_row(kind, n, title, meta={"jellyfin_item_id": key}, thumbnail=None))
    elif kind == "non_s3":
        seed.items.append(_item(key, title, rng))
        seed.rows.append(_row(kind, n, title, content_url=f"https://cdn.example.org/{n}.mp4", item_key=key))


LINKED_EVERY = 3  # every third row of a kind that gets republished has related videos


def _add_videos(seed: Seed, row: SeedRow, n: int) -> None:
    """Two videos for the row's title (its own title, and "behind the scenes", which PMOVES.yt's
    similarity puts just above 0.70 for a title alone), with transcripts longer than the 200 characters
    a stored excerpt keeps. Other rows share words with them, never the number, so stay below 0.70."""
    words = " ".join(f"{row.title.lower()} scene {k}" for k in range(12))
    for suffix, title in (("a", row.title), ("b", f"{row.title} behind the scenes")):
        seed.videos.append(SeedVideo(f"yt{n:04d}{suffix}", title, f"{title}: {words}"))


def mixed_catalog(size: int, seed: int = 7) -> Seed:
    """`size` rows cycling through every kind, so each appears about size/len(KINDS) times."""
    rng = random.Random(seed)
    result = Seed()
    kinds = list(KINDS)
    for n in range(1, size + 1):
        _add_kind(result, kinds[(n - 1) % len(kinds)], n, rng)
        row = result.rows[-1]
        if row.expect == "republished" and "description" not in row.meta and n % LINKED_EVERY == 0:
            _add_videos(result, row, n)
    return result
