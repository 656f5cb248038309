"""DISCORD_* settings for `producer verify --source discord`: the webhook's id and token from its URL,
the API base from its origin (or DISCORD_API_URL), and errors that never echo a token."""

from __future__ import annotations

import pytest

from backfill.core.errors import ConfigError
from backfill.settings import DiscordSettings, load_settings

HOOK = "https://discord.com/api/webhooks/1300000000000000001/hook-secret"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DISCORD_WEBHOOK_URL", "DISCORD_API_URL", "DISCORD_BOT_TOKEN", "DISCORD_CHANNEL_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def discord() -> DiscordSettings:
    return load_settings([DiscordSettings]).get(DiscordSettings)


def test_nothing_set_reads_nothing(env: pytest.MonkeyPatch) -> None:
    settings = discord()
    assert (settings.webhook, settings.readable, settings.api) == (None, False, "https://discord.com/api")


@pytest.mark.parametrize(
    ("url", "api"),
    [
        (HOOK, "https://discord.com/api"),
        ("https://discord.com/api/v10/webhooks/1300000000000000001/hook-secret", "https://discord.com/api"),
        ("http://127.0.0.1:8080/api/webhooks/1300000000000000001/hook-secret", "http://127.0.0.1:8080/api"),
        (
            "https://proxy.example.org/discord/api/webhooks/1300000000000000001/hook-secret/",
            "https://proxy.example.org/discord/api",
        ),
    ],
)
def test_the_api_is_the_webhook_urls_origin_and_api(env: pytest.MonkeyPatch, url: str, api: str) -> None:
    """So a proxy or a test double in DISCORD_WEBHOOK_URL needs no other setting."""
    env.setenv("DISCORD_WEBHOOK_URL", url)
    settings = discord()
    assert settings.api == api
    assert settings.webhook == ("1300000000000000001", "hook-secret")


def test_discord_api_url_wins_and_a_bot_token_makes_the_channel_readable(env: pytest.MonkeyPatch) -> None:
    env.setenv("DISCORD_WEBHOOK_URL", HOOK)
    env.setenv("DISCORD_API_URL", "http://discord-proxy:8080/api/")
    assert discord().api == "http://discord-proxy:8080/api"
    assert not discord().readable
    env.setenv("DISCORD_BOT_TOKEN", "bot-secret")
    assert discord().readable
    env.delenv("DISCORD_WEBHOOK_URL")
    env.setenv("DISCORD_CHANNEL_ID", "900")
    assert discord().readable


@pytest.mark.parametrize(
    "url",
    ["https://discord.com/api/channels/1/messages", "ftp://x/api/webhooks/1/hook-secret", "hook-secret"],
)
def test_a_malformed_webhook_url_is_named_without_its_value(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("DISCORD_WEBHOOK_URL", url)
    env.setenv("DISCORD_CHANNEL_ID", "not-a-snowflake")
    with pytest.raises(ConfigError) as refused:
        discord()
    message = str(refused.value)
    assert "DISCORD_WEBHOOK_URL" in message and "DISCORD_CHANNEL_ID" in message
    assert "hook-secret" not in message
