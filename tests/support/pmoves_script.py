"""What PMOVES' own backfill script stores for a search answer, written out independently of
`backfill.core.related` so a test can hold the two side by side.

The script (`--link-youtube`) keeps `results[:3]` of PMOVES.yt's answer, each as `video_id`, `title`,
`url`, `similarity` (as given) and `transcript_excerpt` (the excerpt's first 200 characters), in the
payload's meta under `related_youtube`; adds `youtube-linked` to the tags (a set: order not kept); and
writes `youtube_linked_count` (how many results) and `youtube_top_match` (the first one's video id)
into the row.
"""

from __future__ import annotations

from typing import Any


def script_links(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "video_id": link.get("video_id"),
            "title": link.get("title"),
            "url": link.get("url"),
            "similarity": link.get("similarity"),
            "transcript_excerpt": link.get("excerpt", "")[:200],
        }
        for link in results[:3]
    ]


def script_row_keys(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"youtube_linked_count": len(results), "youtube_top_match": results[0].get("video_id")}


def script_tags(tags: list[str]) -> set[str]:
    return {*tags, "youtube-linked"}  # the script: list(set(tags + ["youtube-linked"]))
