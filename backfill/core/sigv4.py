"""AWS Signature Version 4 for the two S3 calls the backfill makes: a signed HEAD, a presigned GET.

Pure functions (the clock is an argument). Path-style URLs, as MinIO serves them. Checked against
botocore's signer in the unit tests.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    region: str


def object_url(endpoint: str, bucket: str, key: str) -> str:
    return f"{endpoint.rstrip('/')}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _signing_key(creds: Credentials, day: str) -> bytes:
    key = _hmac(f"AWS4{creds.secret_key}".encode(), day)
    for part in (creds.region, "s3", "aws4_request"):
        key = _hmac(key, part)
    return key


def _canonical_query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


def _signature(creds: Credentials, when: datetime, canonical_request: str) -> str:
    day = when.strftime("%Y%m%d")
    scope = f"{day}/{creds.region}/s3/aws4_request"
    to_sign = "\n".join(
        [
            ALGORITHM,
            when.strftime("%Y%m%dT%H%M%SZ"),
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    return hmac.new(_signing_key(creds, day), to_sign.encode(), hashlib.sha256).hexdigest()


def _canonical_request(method: str, url: str, query: str, headers: dict[str, str], payload_hash: str) -> str:
    names = sorted(headers)
    canonical_headers = "".join(f"{n}:{headers[n].strip()}\n" for n in names)
    return "\n".join(
        [method, urlsplit(url).path or "/", query, canonical_headers, ";".join(names), payload_hash]
    )


def signed_headers(method: str, url: str, creds: Credentials, when: datetime) -> dict[str, str]:
    """Headers for a signed request with an empty body (HEAD/GET); `when` must be UTC."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": urlsplit(url).netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    canonical = _canonical_request(method, url, "", headers, EMPTY_SHA256)
    scope = f"{when.strftime('%Y%m%d')}/{creds.region}/s3/aws4_request"
    authorization = (
        f"{ALGORITHM} Credential={creds.access_key}/{scope}, SignedHeaders={';'.join(sorted(headers))}, "
        f"Signature={_signature(creds, when, canonical)}"
    )
    return {"x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date, "Authorization": authorization}


def presign_get(url: str, creds: Credentials, when: datetime, expires: int) -> str:
    """A presigned GET URL valid `expires` seconds (S3 allows at most 7 days)."""
    if not 1 <= expires <= 7 * 24 * 3600:
        raise ValueError("presigned URLs live between 1 second and 7 days")
    scope = f"{when.strftime('%Y%m%d')}/{creds.region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": ALGORITHM,
        "X-Amz-Credential": f"{creds.access_key}/{scope}",
        "X-Amz-Date": when.strftime("%Y%m%dT%H%M%SZ"),
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
    }
    query = _canonical_query(params)
    canonical = _canonical_request("GET", url, query, {"host": urlsplit(url).netloc}, UNSIGNED)
    return f"{url}?{query}&X-Amz-Signature={_signature(creds, when, canonical)}"
