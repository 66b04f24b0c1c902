"""The PostgreSQL store: the shared store contract, plus what only a shared store has
(schema creation by many processes at once, leases, fencing, claims, notifications)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _pg import PG_URL, fresh_schema
from store_contract import StoreContract

from saga._store import Store
from saga._store._postgres import PostgresStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    async for name in fresh_schema():
        yield name


class TestPostgresStore(StoreContract):
    @pytest.fixture
    async def store(self, schema: str) -> AsyncIterator[Store]:
        store = PostgresStore(PG_URL, schema=schema)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def peer(self, store: Store, schema: str) -> AsyncIterator[Store]:
        client = PostgresStore(PG_URL, schema=schema, access="client")
        await client.open()
        try:
            yield client
        finally:
            await client.close()
