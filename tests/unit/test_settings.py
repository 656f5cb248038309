"""Settings: PMOVES names, defaults, one error naming every problem, secrets never echoed."""

from __future__ import annotations

import pytest

from backfill.core.errors import ConfigError
from backfill.settings import (
    AgentZeroSettings,
    BackfillSettings,
    CatalogSettings,
    JellyfinSettings,
    NatsSettings,
    StorageSettings,
    load_settings,
    variables,
)
from producer.status import catalog_configured

ENV = {
    "SUPA_REST_URL": "http://postgrest:3000/",
    "SUPABASE_SERVICE_ROLE_KEY": "service-secret",
    "JELLYFIN_URL": "http://jellyfin:8096",
    "JELLYFIN_API_KEY": "jf-secret",
    "JELLYFIN_USER_ID": "0123456789abcdef0123456789abcdef",
}
ALL = (NatsSettings, CatalogSettings, JellyfinSettings, AgentZeroSettings, StorageSettings, BackfillSettings)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for key in list(os.environ):
        if key.startswith(
            ("SUPA", "JELLYFIN", "NATS", "AGENT_ZERO", "MINIO", "BACKFILL", "DEFAULT_NAMESPACE", "AWS")
        ):
            monkeypatch.delenv(key)
    return monkeypatch


def test_defaults_match_pmoves(env: pytest.MonkeyPatch) -> None:
    """NATS, Agent Zero, namespace, version and public base default as PMOVES does."""
    for key, value in ENV.items():
        env.setenv(key, value)
    bundle = load_settings(ALL)
    assert bundle.get(NatsSettings).url == "nats://localhost:4222"
    assert bundle.get(AgentZeroSettings).base_url == "http://localhost:8080"
    assert bundle.get(BackfillSettings).default_namespace == "pmoves"
    assert bundle.get(BackfillSettings).version == "2025-10-14"
    assert bundle.get(JellyfinSettings).public_base == "http://jellyfin:8096"
    assert bundle.get(CatalogSettings).rest_url == "http://postgrest:3000"
    assert not bundle.get(StorageSettings).enabled


def test_supabase_rest_url_alias_is_accepted(env: pytest.MonkeyPatch) -> None:
    """SUPABASE_REST_URL works where SUPA_REST_URL is not set (Supabase CLI stacks)."""
    env.setenv("SUPABASE_REST_URL", "http://localhost:65421/rest/v1")
    env.setenv("SUPABASE_SERVICE_ROLE_KEY", "k")
    assert load_settings([CatalogSettings]).get(CatalogSettings).rest_url == "http://localhost:65421/rest/v1"


def test_one_error_names_every_problem_without_secrets(env: pytest.MonkeyPatch) -> None:
    """Missing and malformed variables are all listed at once; no value is echoed."""
    env.setenv("JELLYFIN_API_KEY", "super-secret-key")
    env.setenv("JELLYFIN_URL", "jellyfin:8096")
    env.setenv("NATS_URL", "http://nats:4222")
    env.setenv("BACKFILL_MAX_DELIVER", "many")
    env.setenv("MINIO_ENDPOINT", "minio:9000")
    with pytest.raises(ConfigError) as caught:
        load_settings(ALL)
    message = str(caught.value)
    for name in (
        "SUPA_REST_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "JELLYFIN_URL",
        "JELLYFIN_USER_ID",
        "NATS_URL",
        "BACKFILL_MAX_DELIVER",
        "MINIO_ACCESS_KEY",
    ):
        assert name in message
    assert "super-secret-key" not in message
    assert "jellyfin:8096" not in message


def test_empty_values_count_as_unset(env: pytest.MonkeyPatch) -> None:
    """Compose passes `JELLYFIN_SERVER_ID=` as empty: that means unset, not an empty id."""
    for key, value in ENV.items():
        env.setenv(key, value)
    env.setenv("JELLYFIN_SERVER_ID", "")
    env.setenv("JELLYFIN_PUBLIC_BASE_URL", "")
    jellyfin = load_settings([JellyfinSettings]).get(JellyfinSettings)
    assert jellyfin.server_id is None
    assert jellyfin.public_base == "http://jellyfin:8096"


def test_storage_endpoint_accepts_host_port_or_url(env: pytest.MonkeyPatch) -> None:
    """`minio:9000` becomes http(s) by MINIO_SECURE; a full URL is kept."""
    env.setenv("MINIO_ENDPOINT", "minio:9000")
    env.setenv("MINIO_ACCESS_KEY", "a")
    env.setenv("MINIO_SECRET_KEY", "s")
    env.setenv("MINIO_SECURE", "true")
    assert load_settings([StorageSettings]).get(StorageSettings).endpoint_url == "https://minio:9000"
    env.setenv("MINIO_ENDPOINT", "http://127.0.0.1:9000/")
    assert load_settings([StorageSettings]).get(StorageSettings).endpoint_url == "http://127.0.0.1:9000"


def test_secrets_are_hidden_in_repr(env: pytest.MonkeyPatch) -> None:
    """Printing a settings object never shows a key."""
    for key, value in ENV.items():
        env.setenv(key, value)
    bundle = load_settings([CatalogSettings, JellyfinSettings])
    assert "service-secret" not in repr(bundle.get(CatalogSettings))
    assert "jf-secret" not in repr(bundle.get(JellyfinSettings))


def test_backfill_table_is_refused_because_the_merge_functions_write_studio_board(
    env: pytest.MonkeyPatch,
) -> None:
    """It used to change what was read (and PATCHed) but not what the merge functions wrote."""
    env.setenv("BACKFILL_TABLE", "studio_board_copy")
    with pytest.raises(ConfigError, match=r"BACKFILL_TABLE: not supported.*public\.studio_board"):
        load_settings(ALL)


def test_pmoves_env_shared_service_key_name_is_accepted(env: pytest.MonkeyPatch) -> None:
    """SUPABASE_SERVICE_KEY, the name in PMOVES' env.shared, is the service key when it is the only one."""
    env.setenv("SUPA_REST_URL", "http://postgrest:3000")
    env.setenv("SUPABASE_SERVICE_KEY", "env-shared-key")
    catalog = load_settings([CatalogSettings]).get(CatalogSettings)
    assert catalog.service_key is not None
    assert catalog.service_key.get_secret_value() == "env-shared-key"


@pytest.mark.parametrize(
    ("role_key", "service_key", "used"),
    [
        ("role-key", "env-shared-key", "role-key"),  # both set: SUPABASE_SERVICE_ROLE_KEY wins
        ("", "env-shared-key", "env-shared-key"),  # empty counts as unset, so the other name is used
    ],
)
def test_service_role_key_wins_over_service_key_when_both_are_set(
    env: pytest.MonkeyPatch, role_key: str, service_key: str, used: str
) -> None:
    """The first name that is set and not empty wins: SUPABASE_SERVICE_ROLE_KEY, then SUPABASE_SERVICE_KEY."""
    env.setenv("SUPA_REST_URL", "http://postgrest:3000")
    env.setenv("SUPABASE_SERVICE_ROLE_KEY", role_key)
    env.setenv("SUPABASE_SERVICE_KEY", service_key)
    catalog = load_settings([CatalogSettings]).get(CatalogSettings)
    assert catalog.service_key is not None
    assert catalog.service_key.get_secret_value() == used


def test_a_missing_service_key_names_both_accepted_names(env: pytest.MonkeyPatch) -> None:
    """Without either name the error says both, so an operator with PMOVES' env.shared knows what to set."""
    env.setenv("SUPA_REST_URL", "http://postgrest:3000")
    with pytest.raises(
        ConfigError, match=r"SUPABASE_SERVICE_ROLE_KEY \(or SUPABASE_SERVICE_KEY\): is required"
    ):
        load_settings([CatalogSettings])


def test_variables_lists_every_name_a_field_accepts_in_order() -> None:
    assert variables(CatalogSettings, "rest_url", "dsn") == (
        "SUPA_REST_URL",
        "SUPABASE_REST_URL",
        "CATALOG_DSN",
        "SUPABASE_DB_URL",
    )
    assert variables(CatalogSettings, "pool_mode") == ("CATALOG_POOL_MODE",)


def test_status_counts_rows_whenever_any_catalog_variable_is_set(env: pytest.MonkeyPatch) -> None:
    for name in ("CATALOG_DSN", "SUPABASE_DB_URL"):
        env.delenv(name, raising=False)
    assert not catalog_configured()
    for name in variables(CatalogSettings, "rest_url", "dsn"):
        env.setenv(name, "x")
        assert catalog_configured(), name
        env.delenv(name)
