"""The embedded PostgreSQL the contract tests and the demo run on: throwaway, and its helpers are exact."""

from __future__ import annotations

import socket

import pytest

from backfill_doubles.postgres import EmbeddedPostgres, execute, insert_rows, read_rows


def test_stop_removes_the_server_and_its_directory() -> None:
    """Nothing is left behind: no listener, no temporary directory; stopping twice is harmless."""
    server = EmbeddedPostgres()
    server.start()
    root, port = server.data_dir.parent, server.port
    assert (server.data_dir / "PG_VERSION").is_file()
    server.stop()
    assert not root.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.stop()


async def test_insert_rows_stores_what_it_is_given_and_defaults_the_rest(postgres_dsn: str) -> None:
    """Given columns are stored, `meta: None` is SQL null, a missing meta is `{}`, created_at is set."""
    await execute(postgres_dsn, "truncate public.studio_board restart identity")
    ids = await insert_rows(
        postgres_dsn,
        [
            {
                "title": "a",
                "status": "published",
                "meta": {"k": [1, None]},
                "created_at": "2025-06-01T10:00:00Z",
            },
            {"status": "draft", "meta": None},
            {},
        ],
    )
    assert ids == [1, 2, 3]
    rows = await read_rows(postgres_dsn)
    assert rows[0] == {
        "id": 1,
        "title": "a",
        "namespace": None,
        "content_url": None,
        "status": "published",
        "meta": {"k": [1, None]},
        "created_at": "2025-06-01T10:00:00+00:00",
    }
    assert rows[1]["meta"] is None
    assert rows[2]["meta"] == {}
    assert rows[2]["created_at"] is not None


async def test_explicit_ids_move_the_sequence_past_them(postgres_dsn: str) -> None:
    """Rows inserted later without an id never collide with explicit ones."""
    await execute(postgres_dsn, "truncate public.studio_board restart identity")
    assert await insert_rows(postgres_dsn, [{"id": 40}, {"id": 7}]) == [40, 7]
    assert await insert_rows(postgres_dsn, [{}]) == [41]


async def test_unknown_columns_are_refused_and_nothing_is_inserted(postgres_dsn: str) -> None:
    """A typo in a column name fails the whole batch instead of silently dropping the value."""
    await execute(postgres_dsn, "truncate public.studio_board restart identity")
    with pytest.raises(ValueError, match="titel"):
        await insert_rows(postgres_dsn, [{"title": "ok"}, {"titel": "typo"}])
    assert await read_rows(postgres_dsn) == []
