"""Credentials in NATS_URL never reach an error message or a log line."""

from __future__ import annotations

import pytest

from backfill.adapters.jetstream.bus import connect, mask_credentials
from backfill.core.errors import BusError
from backfill_doubles.natsserver import free_port


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("nats://user:s3cret@nats:4222", "nats://***@nats:4222"),
        ("nats://t0ken@nats:4222", "nats://***@nats:4222"),
        ("nats://a:b@n1:4222,nats://c:d@n2:4222", "nats://***@n1:4222,nats://***@n2:4222"),
        ("failed: tls://u:p@host:4443 refused", "failed: tls://***@host:4443 refused"),
        ("nats://nats:4222", "nats://nats:4222"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


async def test_a_failed_connection_names_the_server_without_its_password() -> None:
    url = f"nats://backfill:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(BusError) as failed:
        await connect(url, "test", reconnect_forever=False)
    assert "hunter2" not in str(failed.value)
    assert "nats://***@127.0.0.1" in str(failed.value)
