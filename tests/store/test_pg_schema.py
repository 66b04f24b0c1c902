"""The PostgreSQL store as processes open it: the schema created by many at once, schemas
of other versions or other applications, access modes, connection and URL errors, and
``durability="normal"``."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio
import msgspec
import pytest
from _pg import PG_URL, query, url_for
from store_contract_base import T0, body, records, row

import saga
from saga import NotASagaStore, StoreError
from saga._store import Append, SendResult, open_store
from saga._store._pg_schema import SCHEMA_VERSION
from saga._store._postgres import PostgresStore

pytestmark = pytest.mark.anyio

OUR_TABLES = {"saga_meta", "saga_workers", "sagas", "saga_log", "saga_inbox"}

# Opens the store on a schema at a given wall-clock instant (so that every process races
# for the same empty schema), prints its fence, closes it.
_OPEN_AND_CLOSE = """
import sys, time
import anyio
from saga._store._postgres import PostgresStore

async def main(dsn, schema, at):
    await anyio.sleep(max(0.0, at - time.time()))
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    print(store.fence)
    await store.close()

anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


async def tables(schema: str) -> set[str]:
    rows = await query(
        schema, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    return {r[0] for r in rows}


async def schema_exists(schema: str) -> bool:
    rows = await query(schema, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
    return rows[0][0] == 1


async def meta(schema: str) -> dict[str, str]:
    return {r[0]: r[1] for r in await query(schema, "SELECT key, value FROM saga_meta")}


async def opened(schema: str, **options: Any) -> PostgresStore:
    store = PostgresStore(PG_URL, schema=schema, **options)
    await store.open()
    return store


# -- creation by many at once -------------------------------------------------------------------


async def test_processes_opening_a_new_schema_at_once_create_it_once(schema: str) -> None:
    at = time.time() + 2.0
    results: list[Any] = []

    async def one() -> None:
        command = [sys.executable, "-c", _OPEN_AND_CLOSE, PG_URL, schema, str(at)]
        results.append(await anyio.run_process(command, check=False))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(one)

    for result in results:
        assert result.returncode == 0, result.stderr.decode()
    fences = [int(r.stdout.decode().strip()) for r in results]
    assert len(set(fences)) == 6
    assert await tables(schema) == OUR_TABLES
    assert await meta(schema) == {"format": "saga-store", "schema_version": str(SCHEMA_VERSION)}
    workers = await query(schema, "SELECT fence FROM saga_workers ORDER BY fence")
    assert [r[0] for r in workers] == sorted(fences)


async def test_stores_opening_a_new_schema_at_once_in_one_process(schema: str) -> None:
    stores: list[PostgresStore] = []
    all_open, checked = anyio.Event(), anyio.Event()

    async def one() -> None:  # a store is opened and closed by the same task
        store = await opened(schema)
        try:
            stores.append(store)
            if len(stores) == 5:
                all_open.set()
            await checked.wait()
        finally:
            await store.close()

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
        with anyio.fail_after(10):
            await all_open.wait()
        try:
            assert len({store.fence for store in stores}) == 5
            assert await tables(schema) == OUR_TABLES
            assert await meta(schema) == {
                "format": "saga-store",
                "schema_version": str(SCHEMA_VERSION),
            }
            # They share the one schema: what one starts, another reads.
            await stores[0].start(row("s1"), [(1, body("s1", 1))])
            assert await stores[4].saga("s1") == row("s1")
        finally:
            checked.set()


async def test_reopening_keeps_what_is_there(schema: str) -> None:
    first = await opened(schema)
    await first.start(row("s1"), [(1, body("s1", 1))])
    await first.close()
    second = await opened(schema)
    try:
        assert await second.log("s1") == [body("s1", 1)]
        assert second.fence is not None
        assert second.fence > (first.fence or 0)
    finally:
        await second.close()


# -- other versions, other applications -------------------------------------------------------


@pytest.mark.parametrize("access", ["owner", "client", "read"])
async def test_a_newer_schema_is_refused(schema: str, access: str) -> None:
    await (await opened(schema)).close()
    await query(schema, "UPDATE saga_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="upgrade saga") as info:
        await PostgresStore(PG_URL, schema=schema, access=access).open()
    assert not isinstance(info.value, NotASagaStore)
    assert "99" in str(info.value)
    assert (await meta(schema))["schema_version"] == "99"  # left as it was
    workers = await query(schema, "SELECT count(*) FROM saga_workers")
    assert workers[0][0] == 1  # the first owner's; the refused one did not register


@pytest.mark.parametrize("access", ["owner", "client", "read"])
@pytest.mark.parametrize("table", ["sagas", "saga_meta", "saga_inbox", "saga_workers"])
async def test_tables_of_another_application_are_not_a_saga_store(
    schema: str, access: str, table: str
) -> None:
    await query(schema, f'CREATE SCHEMA "{schema}"')
    await query(schema, f"CREATE TABLE {table} (id integer PRIMARY KEY, title text)")
    await query(schema, f"INSERT INTO {table} VALUES (1, 'Njal')")
    with pytest.raises(NotASagaStore):
        await PostgresStore(PG_URL, schema=schema, access=access).open()
    assert await tables(schema) == {table}
    assert [tuple(r) for r in await query(schema, f"SELECT * FROM {table}")] == [(1, "Njal")]


@pytest.mark.parametrize("access", ["owner", "client", "read"])
async def test_a_foreign_saga_meta_is_not_a_saga_store(schema: str, access: str) -> None:
    await query(schema, f'CREATE SCHEMA "{schema}"')
    await query(schema, "CREATE TABLE saga_meta (key text PRIMARY KEY, value text)")
    await query(schema, "INSERT INTO saga_meta VALUES ('format', 'something else')")
    with pytest.raises(NotASagaStore):
        await PostgresStore(PG_URL, schema=schema, access=access).open()
    assert await tables(schema) == {"saga_meta"}


@pytest.mark.parametrize("access", ["client", "read"])
async def test_a_client_creates_nothing(schema: str, access: str) -> None:
    with pytest.raises(NotASagaStore):
        await PostgresStore(PG_URL, schema=schema, access=access).open()
    assert not await schema_exists(schema)
    await query(schema, f'CREATE SCHEMA "{schema}"')  # present, but empty
    with pytest.raises(NotASagaStore):
        await PostgresStore(PG_URL, schema=schema, access=access).open()
    assert await tables(schema) == set()


# -- access modes -------------------------------------------------------------------------------


async def test_read_access_cannot_write_and_client_access_may_only_send(schema: str) -> None:
    owner = await opened(schema)
    reader = await opened(schema, access="read")
    client = await opened(schema, access="client")
    try:
        first = row("s1", status="WAITING")
        await owner.start(first, [(1, body("s1", 1))])
        assert reader.fence is None
        assert client.fence is None

        def writes(store: PostgresStore) -> list[Any]:
            return [
                lambda: store.start(row("s2"), [(1, body("s2", 1))]),
                lambda: store.append(Append("s1", records("s1", 2, 2), row("s1", seq=2))),
                lambda: store.append_if(
                    Append("s1", records("s1", 2, 2), row("s1", seq=2)), status="WAITING"
                ),
                store.keep_lease,
                lambda: store.claim_orphans([("trip", 1)]),
                lambda: store.park("s1", b"", release=True, fence=None),
            ]

        send = [lambda: reader.send("s1", "e0", kind="event", name="paid", key=None,
                                    payload=b"", sent_at=T0)]  # fmt: skip
        for write in [*writes(reader), *send, *writes(client)]:
            with pytest.raises(StoreError):
                await write()

        assert await owner.log("s1") == [body("s1", 1)]
        assert await owner.saga("s1") == first
        assert await owner.saga("s2") is None
        assert await owner.inbox("s1") == []

        result = await client.send("s1", "e1", kind="event", name="paid", key="k",
                                   payload=b"p", sent_at=T0)  # fmt: skip
        assert result is SendResult.FORWARDED
        assert [i.event_id for i in await reader.inbox("s1")] == ["e1"]
        assert await reader.saga("s1") == first
        workers = await query(schema, "SELECT fence FROM saga_workers")
        assert [r[0] for r in workers] == [owner.fence]
    finally:
        for store in (client, reader, owner):
            await store.close()


def test_bad_options_are_value_errors() -> None:
    with pytest.raises(ValueError, match="access"):
        PostgresStore(PG_URL, access="admin")
    with pytest.raises(ValueError, match="durability"):
        PostgresStore(PG_URL, durability="eventual")
    with pytest.raises(ValueError, match="schema"):
        PostgresStore(PG_URL, schema="")


# -- connection and URL errors ------------------------------------------------------------------


class _State(msgspec.Struct):
    n: int = 0


class _Noop(saga.Step):
    async def run(self, ctx: saga.StepContext[_State]) -> None:
        return None


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    trip = saga.Saga("trip", state=_State, steps=[_Noop()])
    runtime = saga.Runtime("postgresql://root:hunter2@127.0.0.1:1/test", sagas=[trip])
    with pytest.raises(StoreError) as info:
        async with runtime:
            pytest.fail("the runtime started without a server")
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql:///test", "no host"),
        ("postgresql://root@127.0.0.1:5432", "no database"),
        ("postgresql://root@127.0.0.1:5432/", "no database"),
        ("postgresql://root@127.0.0.1/test?lease_seconds=soon", "lease_seconds"),
        ("postgresql://root@127.0.0.1/test?lease_seconds=0.1", "lease_seconds"),
        ("postgresql://root@127.0.0.1/test?pool_size=many", "pool_size"),
        ("postgres://root@127.0.0.1/test?schema=", "schema"),
    ],
)
def test_bad_postgresql_urls_are_value_errors(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://root:hunter2@/test",
        "postgresql://root:hunter2@127.0.0.1:5432/",
        "postgresql://root:hunter2@127.0.0.1/test?lease_seconds=soon",
    ],
)
def test_a_bad_url_is_not_quoted_with_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="PostgreSQL URL") as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


def test_a_url_gives_the_store_options_and_the_driver_the_rest() -> None:
    store = open_store(url_for("tenant_7", lease_seconds=2.5, sslmode="disable"))
    assert isinstance(store, PostgresStore)
    assert (store.schema, store.lease_seconds, store.renew_interval) == ("tenant_7", 2.5, 2.5 / 3)
    assert "sslmode=disable" in store._dsn
    assert "lease_seconds" not in store._dsn
    assert "schema" not in store._dsn


# -- durability ---------------------------------------------------------------------------------


async def test_normal_durability_opens_and_works(schema: str) -> None:
    store = open_store(url_for(schema), durability="normal")
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        assert await store.start(row("s1"), [(1, body("s1", 1))]) is None
        assert await store.saga("s1") == row("s1")
        assert await store.log("s1") == [body("s1", 1)]
        assert store._pool is not None
        assert await store._pool.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await store.close()
    full = await opened(schema)
    try:
        assert full._pool is not None
        assert await full._pool.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await full.close()
