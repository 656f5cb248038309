"""YouTube linking on the wire: carried in the request, and absent from requests enqueued before it."""

from __future__ import annotations

import pytest

from backfill.core.wire import (
    BackfillRequest,
    InvalidMessage,
    Mode,
    YoutubeLinking,
    decode_request,
    encode_request,
    new_request,
    request_subject,
)

PREFIX = "backfill"
SUBJECT = request_subject(PREFIX, 7)
# A request exactly as producers before YouTube linking encoded it (field for field, in their order).
OLD_BODY = (
    b'{"row_id":7,"backfill_version":"2025-10-14","mode":"republish","run_id":"run-1",'
    b'"enqueued_at":"2026-01-02T03:04:05.000Z","v":1}'
)


def test_a_request_from_before_youtube_linking_decodes_as_no_linking() -> None:
    """Old messages still in the stream: no `youtube` field means the worker links nothing."""
    request = decode_request(OLD_BODY, SUBJECT, PREFIX)
    assert request.youtube is None
    assert (request.row_id, request.mode, request.run_id) == (7, Mode.REPUBLISH, "run-1")


def test_an_explicit_null_also_means_no_linking() -> None:
    """A producer without --link-youtube sends `"youtube": null`."""
    body = OLD_BODY.replace(b'"v":1', b'"youtube":null,"v":1')
    assert decode_request(body, SUBJECT, PREFIX).youtube is None
    plain = new_request(7, "2025-10-14", Mode.REPUBLISH, "run-1")
    assert b'"youtube":null' in encode_request(plain)


def test_linking_round_trips_with_its_threshold_and_limit() -> None:
    """What enqueue asked for is what every replica reads."""
    request = new_request(7, "v1", Mode.METADATA_ONLY, "r", youtube=YoutubeLinking(threshold=0.82, limit=9))
    decoded = decode_request(encode_request(request), SUBJECT, PREFIX)
    assert decoded == request
    assert decoded.youtube == YoutubeLinking(threshold=0.82, limit=9)


def test_linking_fields_left_out_take_pmoves_defaults() -> None:
    """`"youtube": {}` is linking with PMOVES' own script's threshold 0.70 and 5 results."""
    body = OLD_BODY.replace(b'"v":1', b'"youtube":{},"v":1')
    assert decode_request(body, SUBJECT, PREFIX).youtube == YoutubeLinking(threshold=0.70, limit=5)


@pytest.mark.parametrize(
    ("linking", "fragment"),
    [
        (b'{"threshold":1.5}', "threshold must be between 0 and 1"),
        (b'{"threshold":-0.1}', "threshold must be between 0 and 1"),
        (b'{"limit":0}', "limit must be between 1 and 50"),
        (b'{"limit":51}', "limit must be between 1 and 50"),
    ],
)
def test_linking_outside_its_bounds_is_an_invalid_message(linking: bytes, fragment: str) -> None:
    """A worker refuses what no producer of this project sends, saying why."""
    body = OLD_BODY.replace(b'"v":1', b'"youtube":' + linking + b',"v":1')
    with pytest.raises(InvalidMessage, match=fragment):
        decode_request(body, SUBJECT, PREFIX)


def test_linking_of_the_wrong_type_is_undecodable() -> None:
    with pytest.raises(InvalidMessage, match="undecodable"):
        decode_request(OLD_BODY.replace(b'"v":1', b'"youtube":"yes","v":1'), SUBJECT, PREFIX)


def test_the_request_type_still_ignores_fields_it_does_not_know() -> None:
    """Forward compatibility the other way: a newer producer's extra fields do not break this worker."""
    body = OLD_BODY.replace(
        b'"v":1', b'"youtube":{"threshold":0.7,"limit":5,"namespace":"x"},"future":1,"v":1'
    )
    assert isinstance(decode_request(body, SUBJECT, PREFIX), BackfillRequest)
