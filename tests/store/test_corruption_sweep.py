"""A damaged store, swept: every column of every table, and random bytes of the raw file.

A real store holds sagas in every condition: completed, compensated, ``FAILED`` with an
error, completed with a dead letter, aborted, and two waiting with a buffered event
(``victim`` and ``healthy``). Copies of it are damaged one way each (every row but
``healthy``'s), then opened by a `Runtime` (the owner) and read by the command line.

Whatever the damage, the only errors are typed ones (`NotASagaStore`, `StoreError`,
`CorruptLog`, or another `SagaError`), nothing hangs and no thread is left behind; where
the runtime opens, ``healthy`` still runs to its end, and what is known to be unreadable
(a record, a payload) parks ``victim`` with `CorruptLog` or keeps the runtime from
opening with `CorruptLog` naming it.

Run as a script (``PYTHONPATH=tests python tests/store/test_corruption_sweep.py FILE...``),
this module opens each file the same way and prints what happened, as JSON: the raw-byte
tests run it in a subprocess with a timeout, so that a hang fails the test instead of
blocking it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
import msgspec
import pytest
from _pg import PG_URL, url_for
from _processes import child_env
from _wait import wait_until

import saga
from saga._cli._main import _print, _run
from saga._cli._parser import build_parser
from saga._store._sqlite import SQLiteStore
from saga._store._sqlite_schema import SCHEMA

pytestmark = pytest.mark.anyio

T = TypeVar("T")
HERE = Path(__file__).resolve()


# -- the sagas --------------------------------------------------------------------------------


class Trip(msgspec.Struct):
    n: int = 0
    notes: list[str] = []


class Declined(Exception):
    pass


class Reserve(saga.Step):
    compensation_retry = saga.RetryPolicy(max_attempts=1)

    async def run(self, ctx: saga.StepContext[Trip]) -> None:
        ctx.state.n += 1

    async def compensate(self, ctx: saga.StepContext[Trip]) -> None:
        if ctx.saga_id == "failed":
            raise Declined("refund service down")
        ctx.state.n -= 1


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for("paid", key=ctx.saga_id, timeout=3600)

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        if not event.payload.get("ok"):
            raise Declined("card declined")
        ctx.state.n += 10


class Ship(saga.Step):
    async def run(self, ctx: saga.StepContext[Trip]) -> saga.Wait:
        return saga.wait_for("shipped")

    async def on_event(self, ctx: saga.StepContext[Trip], event: saga.Event) -> None:
        ctx.state.notes.append(str(event.payload.get("by")))


TRIP = saga.Saga("trip", state=Trip, steps=[Reserve(), Pay(), Ship()])
IDS = ["completed", "compensated", "failed", "dead", "aborted", "victim", "healthy"]
ENDS = {
    "completed": saga.Status.COMPLETED,
    "compensated": saga.Status.COMPENSATED,
    "failed": saga.Status.FAILED,
    "dead": saga.Status.COMPLETED,
    "aborted": saga.Status.COMPENSATED,
}


async def build(url: str) -> None:
    """Every condition a saga can be left in, on the store at ``url``."""
    async with saga.Runtime(url, sagas=[TRIP]) as rt:
        for saga_id in IDS:
            await rt.start(TRIP, Trip(), saga_id=saga_id)
        for saga_id in IDS:
            await wait_until(rt, saga_id, saga.Status.WAITING, timeout=10)
        await rt.send("completed", "paid", {"ok": True}, key="completed")
        await rt.send("completed", "shipped", {"by": "post"})
        await rt.send("compensated", "paid", {"ok": False}, key="compensated")
        await rt.send("failed", "paid", {"ok": False}, key="failed")
        await rt.send("dead", "stray", {"never": "taken"})  # dead-lettered when it completes
        await rt.send("dead", "paid", {"ok": True}, key="dead")
        await rt.send("dead", "shipped", {"by": "air"})
        await rt.abort("aborted", "changed my mind", by="tester")
        for saga_id in ("victim", "healthy"):  # buffered: Pay waits for "paid" first
            await rt.send(saga_id, "shipped", {"by": "sea"})
        for saga_id, status in ENDS.items():
            assert (await rt.handle(saga_id).result(timeout=10)).status is status
        assert (await rt.get("failed")).error is not None
        assert [d.saga_id for d in await rt.dead_letters()] == ["dead"]
        for saga_id in ("victim", "healthy"):
            assert (await rt.get(saga_id)).status is saga.Status.WAITING


# -- what happens on a damaged store ----------------------------------------------------------

Outcomes = dict[str, str]


async def attempt(outcomes: Outcomes, what: str, call: Awaitable[T]) -> T | None:
    """``await call``; a typed error is an outcome, any other error fails the test."""
    try:
        result = await call
    except saga.SagaError as error:
        outcomes[what] = f"{type(error).__name__}: {error}"
        return None
    outcomes[what] = "ok"
    return result


SAGA_ERRORS = {
    name
    for name in saga.__all__
    if isinstance(getattr(saga, name), type) and issubclass(getattr(saga, name), saga.SagaError)
}


def error_type(outcome: str | None) -> str | None:
    """The error an outcome names (``"CorruptLog: ..."``); none for ``"ok"`` or a status."""
    if outcome is None or ": " not in outcome:
        return None
    return outcome.split(": ", 1)[0]


CLI_COMMANDS = [
    ["list"],
    ["show", "victim"],
    ["history", "victim"],
    ["show", "dead"],
    ["dead-letters"],
    ["stats"],
    ["export", "failed"],
]


async def read_with_the_cli(url: str, outcomes: Outcomes, *, both: bool = True) -> None:
    """The command line's reads, in process: each prints, or fails with a typed error.

    ``both``: every command as text and as JSON; else the first three, as text.
    """
    for command in CLI_COMMANDS if both else CLI_COMMANDS[:3]:
        for as_json in (False, True) if both else (False,):
            argv = ["--db", url, *command, *(["--json"] if as_json else [])]
            args = build_parser().parse_args(argv)
            output = await attempt(outcomes, "cli " + " ".join(argv[2:]), _run(args))
            if output is not None:
                with contextlib.redirect_stdout(io.StringIO()):
                    _print(output, as_json)


async def victim_outcome(rt: saga.Runtime, wait: float) -> str:
    """Where ``victim`` got to: its status (and error), or the typed error reading it."""
    try:
        with anyio.move_on_after(wait):
            info = await rt.handle("victim").result()
            return info.status.value
        info = await rt.get("victim")
    except saga.SagaError as error:
        return f"{type(error).__name__}: {error}"
    return info.status.value + (f" ({info.error.type})" if info.error else "")


async def run_on(url: str, *, healthy_must_finish: bool, victim_wait: float) -> Outcomes:
    """Open a runtime on ``url``, read everything, run ``healthy`` (and ``victim``) on."""
    outcomes: Outcomes = {}
    opened = False
    try:
        async with saga.Runtime(url, sagas=[TRIP], shutdown_grace=1) as rt:
            opened = True
            outcomes["open"] = "ok"
            for saga_id in IDS:
                await attempt(outcomes, f"get {saga_id}", rt.get(saga_id))
                await attempt(outcomes, f"history {saga_id}", rt.history(saga_id))
            await attempt(outcomes, "list", rt.list())
            await attempt(outcomes, "dead_letters", rt.dead_letters())
            await attempt(outcomes, "export failed", rt.export("failed"))
            for saga_id in ("healthy", "victim"):
                send = rt.send(saga_id, "paid", {"ok": True}, key=saga_id)
                await attempt(outcomes, f"send {saga_id}", send)
            if healthy_must_finish:
                info = await rt.handle("healthy").result(timeout=10)
                assert (info.status, info.state) == (saga.Status.COMPLETED, Trip(11, ["sea"]))
                outcomes["healthy"] = info.status.value
            else:
                outcomes["healthy"] = "still open"
                with anyio.move_on_after(3):
                    ended = await attempt(outcomes, "healthy", rt.handle("healthy").result())
                    if ended is not None:
                        outcomes["healthy"] = ended.status.value
            outcomes["victim"] = await victim_outcome(rt, victim_wait)
    except saga.SagaError as error:
        outcomes["close" if opened else "open"] = f"{type(error).__name__}: {error}"
    return outcomes


def threads_left() -> list[threading.Thread]:
    """Threads that would keep the process from exiting (an aiosqlite connection's, once
    closed, may still be on its way out: it gets a moment)."""
    threads = [
        t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()
    ]
    for thread in threads:
        thread.join(timeout=5)
    return [t for t in threads if t.is_alive()]


def nothing_left_behind(path: Path) -> None:
    """No connection thread left running and no lock file left behind."""
    assert threads_left() == []
    assert not Path(f"{path}.lock").exists()


# -- SQLite: every column of every table ------------------------------------------------------


def sqlite_columns() -> list[tuple[str, str, str, bool, bool]]:
    """``(table, column, declared type, nullable, rowid alias)`` of the current schema."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        found = []
        for table in ("sagas", "saga_log", "saga_inbox", "saga_meta"):
            for _, name, decl, notnull, _, pk in conn.execute(f"PRAGMA table_info({table})"):
                rowid = decl.upper() == "INTEGER" and pk == 1  # saga_inbox.id; the others
                found.append((table, name, decl.upper(), not notnull and not pk, rowid))
        return found
    finally:
        conn.close()


def variants(decl: str, nullable: bool, rowid: bool) -> list[str]:
    if rowid:  # an INTEGER PRIMARY KEY holds integers only
        return ["negative"]
    found = {
        "TEXT": ["not-utf8", "blob", "integer"],
        "BLOB": ["flipped", "garbage", "text", "integer"],
        "INTEGER": ["text", "blob", "real", "negative"],
        "REAL": ["text", "blob", "negative"],
    }[decl]
    return [*found, "null"] if nullable else found


SQLITE_CASES = [
    (table, column, variant)
    for table, column, decl, nullable, rowid in sqlite_columns()
    for variant in variants(decl, nullable, rowid)
]

# Which rows of each table are damaged (``healthy``'s never), and their key columns.
ROWS = {
    "sagas": ("saga_id", "saga_id != 'healthy'"),
    "saga_log": ("saga_id, seq", "saga_id != 'healthy' AND seq % 2 = 1"),
    "saga_inbox": ("id", "saga_id != 'healthy'"),
    "saga_meta": ("key", "TRUE"),
}


def damaged_value(variant: str, value: Any, i: int, rnd: random.Random) -> tuple[str, Any]:
    """The SQL expression and parameter replacing ``value``, the ``i``-th row's.

    Values stay distinct per row (``i``), so that no unique key is broken.
    """
    text = f"{value!r}-{i}"
    if variant == "not-utf8":
        return "CAST(? AS TEXT)", b"\xff\xfe" + text.encode()
    if variant == "blob":
        return "?", text.encode()
    if variant == "text":
        return "?", f"garbage {text}"
    if variant == "integer":
        return "?", 1_000_000 + i
    if variant == "real":
        return "?", (value if isinstance(value, int | float) else i) + 0.5
    if variant == "negative":
        return "?", -(value if isinstance(value, int | float) else i) - 1
    if variant == "null":
        return "?", None
    if variant == "garbage":
        return "?", b"\xc1 not msgpack " + str(i).encode()
    if variant == "flipped":
        body = bytearray(value if isinstance(value, bytes) else text.encode())
        for _ in range(rnd.randint(1, 3)):
            if body:
                body[rnd.randrange(len(body))] ^= rnd.randrange(1, 256)
        return "?", bytes(body)
    raise AssertionError(variant)


def damage_sqlite(path: Path, table: str, column: str, variant: str) -> int:
    """Damage ``column`` of some rows of ``table`` in the file at ``path``; how many."""
    keys, where = ROWS[table]
    key_columns = [k.strip() for k in keys.split(",")]
    rnd = random.Random(f"{table}.{column}.{variant}")
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"SELECT {keys}, {column} FROM {table} WHERE {where}").fetchall()
        with conn:
            for i, row in enumerate(rows):
                expression, param = damaged_value(variant, row[-1], i, rnd)
                match = " AND ".join(f"{k} = ?" for k in key_columns)
                sql = f"UPDATE {table} SET {column} = {expression} WHERE {match}"
                assert conn.execute(sql, (param, *row[:-1])).rowcount == 1
        return len(rows)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The undamaged store; copy it, never change it."""
    path = tmp_path_factory.mktemp("store") / "base.db"
    anyio.run(build, f"sqlite:///{path}")
    assert sorted(p.name for p in path.parent.iterdir()) == ["base.db"]  # checkpointed, closed
    return path


def copy_of(store: Path, directory: Path) -> Path:
    copy = directory / "copy.db"
    shutil.copy(store, copy)
    return copy


# Damage that is certain to be seen, and the outcome that must then be a CorruptLog (the
# reads before the runtime runs, or `victim` parked, or the runtime refusing to open).
_TYPES = {"not-utf8", "blob"}  # TEXT that is no text (an integer would become text)
_NUMBERS = {"text", "blob"}
_BLOBS = {"garbage", "text", "integer"}
SURELY_SEEN: dict[tuple[str, str], tuple[set[str], str]] = {
    ("sagas", "saga_id"): (_TYPES, "cli list"),
    **{("sagas", c): (_TYPES, "cli show victim") for c in ("name", "status", "step")},
    **{("sagas", c): ({*_NUMBERS, "real"}, "cli show victim") for c in ("version", "seq")},
    **{("sagas", c): (_NUMBERS, "cli show victim")
       for c in ("created_at", "updated_at", "wake_at")},
    **{("sagas", c): (_BLOBS, "cli show victim")
       for c in ("state", "error", "annotations", "parked")},
    ("saga_log", "saga_id"): ({"not-utf8", "blob", "integer"}, "victim"),
    ("saga_log", "seq"): ({"text", "blob", "negative"}, "victim"),
    ("saga_log", "body"): (_BLOBS, "victim"),
    **{("saga_inbox", c): (_TYPES, "victim") for c in ("event_id", "kind", "name", "key")},
    ("saga_inbox", "sent_at"): (_NUMBERS, "victim"),
    **{("saga_inbox", c): (_BLOBS, "victim") for c in ("payload", "headers")},
}  # fmt: skip


def must_see(table: str, column: str, variant: str) -> str | None:
    """The outcome that must be a CorruptLog, if this damage is certain to be seen."""
    variants, outcome = SURELY_SEEN.get((table, column), (set(), ""))
    return outcome if variant in variants else None


@pytest.mark.parametrize(
    ("table", "column", "variant"), SQLITE_CASES, ids=[".".join(c) for c in SQLITE_CASES]
)
async def test_a_damaged_sqlite_column_gives_typed_errors_only(
    sqlite_store: Path, tmp_path: Path, table: str, column: str, variant: str
) -> None:
    copy = copy_of(sqlite_store, tmp_path)
    assert damage_sqlite(copy, table, column, variant) > 0
    url = f"sqlite:///{copy}"
    outcomes: Outcomes = {}
    await read_with_the_cli(url, outcomes)
    nothing_left_behind(copy)
    seen = must_see(table, column, variant)
    outcomes.update(
        await run_on(url, healthy_must_finish=table != "saga_meta", victim_wait=5 if seen else 0.3)
    )
    nothing_left_behind(copy)
    if table == "saga_meta":  # the marker and the version: without them, no saga store
        assert error_type(outcomes["open"]) == "NotASagaStore", outcomes
    if seen is not None:
        assert "CorruptLog" in outcomes[seen], outcomes


async def test_a_read_that_meets_damage_does_not_freeze_later_reads(
    sqlite_store: Path, tmp_path: Path
) -> None:
    """sqlite3's own decoding of text that is not UTF-8 failed in the middle of a row and
    left the statement open: every later read on that connection saw the store as it was
    then, so ``healthy`` never saw the event it was sent, nor its own new records."""
    copy = copy_of(sqlite_store, tmp_path)
    damage_sqlite(copy, "sagas", "name", "not-utf8")
    async with saga.Runtime(f"sqlite:///{copy}", sagas=[TRIP]) as rt:
        with pytest.raises(saga.CorruptLog, match=r"index row.*column name.*not UTF-8"):
            await rt.list()
        with pytest.raises(saga.CorruptLog, match="'victim'"):
            await rt.get("victim")
        await rt.send("healthy", "paid", {"ok": True}, key="healthy")
        info = await rt.handle("healthy").result(timeout=10)
        assert (info.status, info.state) == (saga.Status.COMPLETED, Trip(11, ["sea"]))
        assert (await rt.get("healthy")).seq == len(await rt.history("healthy")) == 14
    nothing_left_behind(copy)


async def test_an_unreadable_schema_is_not_a_saga_store_and_nothing_is_left_open(
    sqlite_store: Path, tmp_path: Path
) -> None:
    """The adversarial run's finding: SQLite's message quoting a garbled schema is not
    UTF-8, so setting up the connection raised a raw UnicodeDecodeError, and the half-open
    connection's thread kept the process from exiting."""
    copy = copy_of(sqlite_store, tmp_path)
    garble_schema(copy)
    for access in ("owner", "read", "client"):
        with pytest.raises(saga.NotASagaStore, match="damaged"):
            await SQLiteStore(str(copy), access=access).open()
        nothing_left_behind(copy)
    outcomes: Outcomes = {}
    await read_with_the_cli(f"sqlite:///{copy}", outcomes)
    assert {error_type(o) for o in outcomes.values()} == {"NotASagaStore"}, outcomes
    # And in a process of its own, which must exit.
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, str(HERE), str(copy)], check=False, env=child_env()
        )
    assert done.returncode == 0, done.stderr.decode()
    assert error_type(json.loads(done.stdout)[str(copy)]["open"]) == "NotASagaStore"


def garble_schema(path: Path) -> None:
    """Put bytes that are not UTF-8 into the SQL of a table in the file's schema, where
    SQLite's syntax error quotes them."""
    sql = b"CREATE TABLE saga_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL \xd1\xff) "
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA writable_schema = ON")
        with conn:
            conn.execute(
                "UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'saga_meta'",
                (sql + b"WITHOUT ROWID",),
            )
    finally:
        conn.close()


# -- SQLite: random bytes of the raw file -----------------------------------------------------

FLIPS = 20
WORKERS = 2


def flipped_copy(store: Path, directory: Path, seed: int) -> Path:
    """A copy of ``store`` with random bytes flipped: in the header for a few seeds, in
    the pages (the schema's first) for the others."""
    rnd = random.Random(seed)
    data = bytearray(store.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for _ in range(rnd.randint(1, 12)):
        if seed % 5 == 0:
            offset = rnd.randrange(16, 100)  # the header, past the magic string
        elif seed % 5 == 1:
            offset = rnd.randrange(100, page)  # the first page: the schema
        else:
            offset = rnd.randrange(page, len(data))
        data[offset] ^= rnd.randrange(1, 256)
    path = directory / f"flipped-{seed}.db"
    path.write_bytes(bytes(data))
    return path


def test_random_bytes_flipped_in_the_file_give_typed_errors_and_no_hang(
    sqlite_store: Path, tmp_path: Path
) -> None:
    paths = [flipped_copy(sqlite_store, tmp_path, seed) for seed in range(FLIPS)]
    # Each worker process opens its share of the copies in turn and must then exit: a
    # thread left running (a half-open connection) would hang it, and fail the test here.
    procs = [
        subprocess.Popen([sys.executable, str(HERE), *map(str, paths[i::WORKERS])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env())
        for i in range(WORKERS)
    ]  # fmt: skip
    found: dict[str, Outcomes] = {}
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err
            found.update(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(found) == sorted(map(str, paths))
    kinds = {error_type(o) for outcomes in found.values() for o in outcomes.values()}
    assert kinds - {None} <= SAGA_ERRORS, found  # "Leak" too: a thread or a lock file left
    assert any(o["open"] == "ok" for o in found.values()), found  # not all trivially refused
    # The real command line, as a person runs it, on a few of them.
    argvs = [[sys.executable, "-m", "saga", "--db", f"sqlite:///{path}", *command]
             for path in paths[:4] for command in (["list"], ["show", "victim"],
                                                   ["history", "victim"])]  # fmt: skip
    runs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for a in argvs]  # fmt: skip
    for argv, proc in zip(argvs, runs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, 1), (argv, err)
        assert "Traceback" not in err, (argv, err)
        if proc.returncode == 1:
            assert err.count("\n") == 1, err
            assert err.startswith(f"saga {argv[5]}: error: "), err


async def _run_on_quickly(url: str) -> Outcomes:
    return await run_on(url, healthy_must_finish=False, victim_wait=1)


def open_in_this_process(paths: list[str]) -> dict[str, Outcomes]:
    """What opening each file with the command line and a runtime does (``__main__``)."""
    found = {}
    for path in paths:
        url = f"sqlite:///{path}"
        outcomes: Outcomes = {}
        anyio.run(read_with_the_cli, url, outcomes)
        outcomes.update(anyio.run(_run_on_quickly, url))
        threads = threads_left()
        outcomes["threads left"] = "ok" if not threads else f"Leak: {threads}"
        lock = path + ".lock"
        outcomes["lock file left"] = f"Leak: {lock}" if os.path.exists(lock) else "ok"
        found[path] = outcomes
    return found


# -- PostgreSQL: every column of the saga tables ----------------------------------------------

PG_TABLES = ("sagas", "saga_log", "saga_inbox", "saga_meta")


def pg_variants(data_type: str) -> list[str]:
    return {
        "bytea": ["garbage", "flipped"],
        "text": ["unknown"],
        "integer": ["negative"],
        "smallint": ["negative"],
        "bigint": ["negative"],
        "double precision": ["nan"],
    }.get(data_type, [])


def pg_value(variant: str, data_type: str, value: Any, i: int, rnd: random.Random) -> Any:
    if variant == "garbage":
        return b"\xc1 not msgpack " + str(i).encode()
    if variant == "flipped":
        body = bytearray(value or b"?")
        for _ in range(rnd.randint(1, 3)):
            body[rnd.randrange(len(body))] ^= rnd.randrange(1, 256)
        return bytes(body)
    if variant == "unknown":
        return f"bogus-{value}-{i}"
    if variant == "negative":
        return -(value or 0) - 1 - i
    if variant == "nan":
        return float("nan")
    raise AssertionError(variant)


class PgStore:
    """A saga store in a schema, with a snapshot to put it back after each damage."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn, self.schema = conn, schema
        self.snapshot = f"{schema}_snap"
        self.tables: list[str] = []

    async def take_snapshot(self) -> None:
        rows = await self.conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            self.schema,
        )
        self.tables = sorted(r[0] for r in rows)
        await self.conn.execute(f'CREATE SCHEMA "{self.snapshot}"')
        for table in self.tables:
            await self.conn.execute(
                f'CREATE TABLE "{self.snapshot}".{table} AS TABLE "{self.schema}".{table}'
            )

    async def restore(self) -> None:
        names = ", ".join(f'"{self.schema}".{t}' for t in self.tables)
        async with self.conn.transaction():
            await self.conn.execute(f"TRUNCATE {names}")
            for table in self.tables:
                await self.conn.execute(
                    f'INSERT INTO "{self.schema}".{table} OVERRIDING SYSTEM VALUE '
                    f'SELECT * FROM "{self.snapshot}".{table}'
                )

    async def drop_snapshot(self) -> None:
        await self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.snapshot}" CASCADE')

    async def columns(self, table: str) -> list[tuple[str, str]]:
        rows = await self.conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2 AND is_identity = 'NO' "
            "AND is_generated = 'NEVER' ORDER BY ordinal_position",
            self.schema, table,
        )  # fmt: skip
        return [(r[0], r[1]) for r in rows]

    async def damage(self, table: str, column: str, data_type: str, variant: str) -> int:
        keys, where = ROWS[table]
        key_columns = [k.strip() for k in keys.split(",")]
        rnd = random.Random(f"{table}.{column}.{variant}")
        target = f'"{self.schema}".{table}'
        rows = await self.conn.fetch(f"SELECT {keys}, {column} FROM {target} WHERE {where}")
        match = " AND ".join(f"{k} = ${n + 2}" for n, k in enumerate(key_columns))
        for i, row in enumerate(rows):
            value = pg_value(variant, data_type, row[-1], i, rnd)
            await self.conn.execute(
                f"UPDATE {target} SET {column} = $1 WHERE {match}", value, *list(row)[:-1]
            )
        return len(rows)


# As `SURELY_SEEN`: damage that must be a CorruptLog in the outcome named.
PG_SURELY_SEEN = {
    ("sagas", "status", "unknown"): "cli show victim",
    **{("sagas", c, v): "cli show victim" for c in ("state", "annotations")
       for v in ("garbage", "flipped")},
    **{("saga_log", c, v): "victim" for c, v in (("saga_id", "unknown"), ("seq", "negative"),
                                                  ("body", "garbage"), ("body", "flipped"))},
    **{("saga_inbox", c, v): "victim" for c in ("payload", "headers")
       for v in ("garbage", "flipped")},
}  # fmt: skip


@pytest.fixture
async def pg_store(schema: str) -> Any:
    await build(url_for(schema, lease_seconds=2))
    conn = await asyncpg.connect(PG_URL)
    store = PgStore(conn, schema)
    try:
        await store.take_snapshot()
        yield store
    finally:
        await store.drop_snapshot()
        await conn.close()


@pytest.mark.parametrize("table", PG_TABLES)
async def test_a_damaged_postgresql_column_gives_typed_errors_only(
    pg_store: PgStore, table: str
) -> None:
    url = url_for(pg_store.schema, lease_seconds=2)
    swept: dict[str, Outcomes] = {}
    for column, data_type in await pg_store.columns(table):
        for variant in pg_variants(data_type):
            await pg_store.restore()
            if not await pg_store.damage(table, column, data_type, variant):
                continue
            outcomes: Outcomes = {}
            await read_with_the_cli(url, outcomes, both=False)  # each opens a connection pool
            seen = PG_SURELY_SEEN.get((table, column, variant))
            outcomes.update(
                await run_on(url, healthy_must_finish=table != "saga_meta",
                             victim_wait=5 if seen else 0.3)
            )  # fmt: skip
            swept[f"{column}.{variant}"] = outcomes
            if table == "saga_meta":
                assert error_type(outcomes["open"]) == "NotASagaStore", outcomes
            if seen is not None:
                assert "CorruptLog" in outcomes[seen], (column, variant, outcomes)
    assert swept, f"nothing of {table} was damaged"


# -- as a script: open files in this process, print what happened ----------------------------

if __name__ == "__main__":
    json.dump(open_in_this_process(sys.argv[1:]), sys.stdout)
