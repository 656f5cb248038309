"""SigV4 signing matches botocore's, byte for byte, for the HEAD and presigned GET the backfill makes."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from backfill.core.sigv4 import Credentials, object_url, presign_get, signed_headers

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1")
WHEN = datetime(2026, 11, 24, 12, 30, 45, tzinfo=UTC)
URL = object_url("http://minio:9000", "outputs", "clips/night drive+1.png")


def boto(request: AWSRequest, auth: S3SigV4Auth) -> AWSRequest:
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN.replace(tzinfo=None)):
        auth.add_auth(request)
    return request


def test_object_url_is_path_style_and_encoded() -> None:
    """Bucket then key, spaces and plus signs percent-encoded, slashes kept."""
    assert URL == "http://minio:9000/outputs/clips/night%20drive%2B1.png"


def test_signed_head_matches_botocore() -> None:
    """Same Authorization header as botocore for a HEAD with an empty body."""
    ours = signed_headers("HEAD", URL, CREDS, WHEN)
    request = AWSRequest(
        method="HEAD", url=URL, headers={"x-amz-content-sha256": ours["x-amz-content-sha256"]}
    )
    theirs = boto(
        request, S3SigV4Auth(BotoCredentials(CREDS.access_key, CREDS.secret_key), "s3", CREDS.region)
    )
    assert ours["Authorization"] == theirs.headers["Authorization"]


def test_presigned_get_matches_botocore() -> None:
    """Same query signature as botocore's presigner."""
    ours = presign_get(URL, CREDS, WHEN, 3600)
    request = AWSRequest(method="GET", url=URL)
    auth = S3SigV4QueryAuth(
        BotoCredentials(CREDS.access_key, CREDS.secret_key), "s3", CREDS.region, expires=3600
    )
    theirs = boto(request, auth)
    assert ours.split("X-Amz-Signature=")[1] == theirs.url.split("X-Amz-Signature=")[1]


def test_presign_refuses_more_than_seven_days() -> None:
    """S3 caps presigned URLs at 7 days."""
    with pytest.raises(ValueError, match="7 days"):
        presign_get(URL, CREDS, WHEN, 8 * 24 * 3600)
