"""`--link-youtube` on `enqueue` and `preview`: related YouTube videos from PMOVES.yt, as PMOVES' own
backfill script links them (`backfill.core.related`).

The options travel in each request (`BackfillRequest.youtube`), so every worker replica links the same
way whatever its own settings; the workers ask PMOVES.yt at their `PMOVES_YT_URL`. A dry run asks
PMOVES.yt itself (read-only) and lists what each row would be linked to.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from backfill.adapters.transport import HttpClient
from backfill.core.model import Row
from backfill.core.ports import VideoSearch
from backfill.core.related import RELATED_KEY, Related
from backfill.core.wire import (
    DEFAULT_YOUTUBE_LIMIT,
    DEFAULT_YOUTUBE_THRESHOLD,
    MAX_YOUTUBE_LIMIT,
    YoutubeLinking,
)
from backfill.enrich import find_related
from backfill.settings import SettingsBundle, YoutubeSettings
from backfill.wiring import build_youtube


def threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def result_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_YOUTUBE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_YOUTUBE_LIMIT}, got {value}")
    return value


def add_youtube_options(parser: argparse.ArgumentParser) -> None:
    """`--link-youtube`, `--youtube-threshold`, `--youtube-limit`."""
    parser.add_argument(
        "--link-youtube",
        action="store_true",
        help="ask PMOVES.yt (PMOVES_YT_URL) for related YouTube videos: the best 3 are stored as "
        "meta.related_youtube and the event is tagged youtube-linked",
    )
    parser.add_argument(
        "--youtube-threshold",
        type=threshold,
        default=DEFAULT_YOUTUBE_THRESHOLD,
        metavar="0..1",
        help=f"with --link-youtube: the least similarity a video needs (default {DEFAULT_YOUTUBE_THRESHOLD})",
    )
    parser.add_argument(
        "--youtube-limit",
        type=result_limit,
        default=DEFAULT_YOUTUBE_LIMIT,
        metavar="N",
        help="with --link-youtube: how many results to ask PMOVES.yt for; the first 3 are stored "
        f"(default {DEFAULT_YOUTUBE_LIMIT})",
    )


def linking_from(args: argparse.Namespace) -> YoutubeLinking | None:
    """The linking a request carries, or None when `--link-youtube` was not given."""
    if not getattr(args, "link_youtube", False):
        return None
    return YoutubeLinking(threshold=args.youtube_threshold, limit=args.youtube_limit)


def linking_options(args: argparse.Namespace) -> dict[str, Any]:
    """What a run's recorded options (`backfill_runs.options`) gain with `--link-youtube`."""
    linking = linking_from(args)
    return {} if linking is None else {"youtube": {"threshold": linking.threshold, "limit": linking.limit}}


def youtube_groups(args: argparse.Namespace) -> list[type[Any]]:
    """The settings a command needs to ask PMOVES.yt itself: only with `--link-youtube`."""
    return [YoutubeSettings] if getattr(args, "link_youtube", False) else []


class DryRunLinks:
    """`enqueue --dry-run --link-youtube`: per row what PMOVES.yt would link it to. Read-only: nothing is
    stored, and a failure is shown (and counted), not retried."""

    def __init__(self, videos: VideoSearch | None, linking: YoutubeLinking) -> None:
        self._videos = videos
        self._linking = linking
        self.counts: Counter[str] = Counter()

    async def find(self, row: Row) -> Related:
        related = await find_related(self._videos, row, self._linking)
        self.counts[related.result] += 1
        return related


def dry_run_links(settings: SettingsBundle, args: argparse.Namespace, http: HttpClient) -> DryRunLinks | None:
    """The dry run's linking, or None without `--link-youtube`."""
    linking = linking_from(args)
    return None if linking is None else DryRunLinks(build_youtube(settings, http), linking)


async def links_of(links: DryRunLinks | None, row: Row) -> dict[str, Any]:
    """What a dry-run row lists about its links: `{"youtube": {result, related_youtube | error}}`, or
    nothing without `--link-youtube`."""
    return {} if links is None else {"youtube": (await links.find(row)).summary()}


def youtube_column(listed: dict[str, Any]) -> str:
    """The tab-separated column a dry-run text line gains: the linked video ids, or the result."""
    youtube = listed.get("youtube")
    if youtube is None:
        return ""
    if youtube.get(RELATED_KEY):
        return "\tyoutube: " + ",".join(str(link["video_id"]) for link in youtube[RELATED_KEY])
    return f"\tyoutube: {youtube['result']}" + (f" ({youtube['error']})" if youtube.get("error") else "")


def links_summary(links: DryRunLinks | None) -> dict[str, Any]:
    """The dry-run summary's counts of rows by linking result; nothing without `--link-youtube`."""
    return {} if links is None else {"youtube": dict(sorted(links.counts.items()))}
