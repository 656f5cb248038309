"""How Jellyfin finds the API key in a request (docs/upstreams.md §2).

`Authorization: MediaBrowser Token="<key>", Client="x", Device="y"` is the current way and always
works. The legacy ways (`X-Emby-Token` / `X-MediaBrowser-Token` headers, the `X-Emby-Authorization`
header, the `Emby` scheme and the `api_key` query parameter) work only when legacy authorization is
enabled: on by default in 10.11, off by default in 12.0. The `ApiKey` query parameter is read by every
release since 10.8. The first credential found wins, as in the server's `AuthorizationContext`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*(?:"([^"]*)"|([^,]*))\s*(?:,|$)')
_SCHEMES = frozenset({"mediabrowser"})
_LEGACY_SCHEMES = frozenset({"mediabrowser", "emby"})


def parse_authorization(header: str, *, legacy: bool) -> dict[str, str] | None:
    """The parameters of a `MediaBrowser ...` header (keys lower-cased), or None for another scheme."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in (_LEGACY_SCHEMES if legacy else _SCHEMES):
        return None
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        raw = match.group(2) if match.group(2) is not None else match.group(3).strip()
        params[match.group(1).lower()] = unquote(raw)
    return params


def _header_token(headers: Mapping[str, str], name: str, *, legacy: bool) -> str | None:
    value = headers.get(name)
    if not value:
        return None
    params = parse_authorization(value, legacy=legacy)
    return (params or {}).get("token") or None


def find_token(headers: Mapping[str, str], query: Mapping[str, str], *, legacy: bool) -> str | None:
    """The API key a request carries, honouring the legacy switch; `query` keys are lower-cased."""
    candidates = [_header_token(headers, "Authorization", legacy=legacy), query.get("apikey")]
    if legacy:
        candidates += [
            _header_token(headers, "X-Emby-Authorization", legacy=legacy),
            headers.get("X-Emby-Token"),
            headers.get("X-MediaBrowser-Token"),
            query.get("api_key"),
        ]
    return next((token for token in candidates if token), None)
