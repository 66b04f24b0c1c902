"""The PostgreSQL server the tests use, and a fresh schema per test.

``SAGA_TEST_POSTGRES`` names the server (default: this machine's, trust authentication).
Without a reachable server the PostgreSQL tests skip, except under ``CI=true``, where they
fail: CI must never pass by not running them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import asyncpg
import pytest

PG_URL = os.environ.get("SAGA_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")
_reachable: bool | None = None
_why: list[str] = []


async def require_server() -> None:
    """Skip (fail under ``CI=true``) if the test server cannot be reached."""
    global _reachable
    if _reachable is None:
        try:
            conn = await asyncpg.connect(PG_URL, timeout=5)
        except (OSError, asyncpg.PostgresError) as error:
            _reachable = False
            _why.append(str(error))
        else:
            await conn.close()
            _reachable = True
    if not _reachable:
        message = f"PostgreSQL at {PG_URL} is unreachable: {_why[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)


def url_for(schema: str, **params: str | float) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"schema": schema, **params}.items())
    return f"{PG_URL}?{query}"


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def new_schema() -> str:
    """A schema name nobody uses yet (the server checked reachable first)."""
    await require_server()
    return "saga_test_" + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def temporary_schema() -> Iterator[str]:
    """A fresh schema for a test (outside its event loop), dropped with all it holds after."""
    schema = anyio.run(new_schema)
    try:
        yield schema
    finally:
        anyio.run(drop_schema, schema)


async def query(schema: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement with ``schema`` first on the search path; its rows."""
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": f'"{schema}"'})
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
