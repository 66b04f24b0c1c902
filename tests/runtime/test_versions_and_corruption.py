"""Recovery of logs this runtime cannot run: another definition, or a corrupt record.

Such a saga is parked (not resumed, reported with an error, its log left intact) and the
runtime carries on with every other saga.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from _cli import run as run_cli
from _pg import query, temporary_schema, url_for
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    n: int = 0


class Reserve(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.n += 1


class Pay(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> saga.Wait:
        ctx.state.n += 10
        return saga.wait_for("go")

    async def on_event(self, ctx: saga.StepContext[Order], event: saga.Event) -> None:
        ctx.state.n += event.payload


class Ship(saga.Step):
    async def run(self, ctx: saga.StepContext[Order]) -> None:
        ctx.state.n += 1000


order_v1 = saga.Saga("order", state=Order, steps=[Reserve(), Pay()], version=1)
other = saga.Saga("other", state=Order, steps=[Pay()])

MISMATCHES = {
    "version-not-registered": [
        saga.Saga("order", state=Order, steps=[Reserve(), Pay()], version=2),
    ],
    "name-not-registered": [],
    "steps-differ": [saga.Saga("order", state=Order, steps=[Reserve(), Ship()], version=1)],
    "steps-reordered": [saga.Saga("order", state=Order, steps=[Pay(), Reserve()], version=1)],
    "step-added": [saga.Saga("order", state=Order, steps=[Reserve(), Pay(), Ship()], version=1)],
}


async def two_waiting_sagas(url: str) -> None:
    """'a-victim' (order v1) and 'b-other' both wait for 'go'; the runtime is then closed."""
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        await rt.start(order_v1, Order(), saga_id="a-victim")
        await rt.start(other, Order(), saga_id="b-other")
        await wait_until(rt, "a-victim", saga.Status.WAITING)
        await wait_until(rt, "b-other", saga.Status.WAITING)


async def other_sagas_still_run(rt: saga.Runtime) -> None:
    await rt.send("b-other", "go", 5)
    info = await rt.handle("b-other").result(timeout=5)
    assert (info.status, info.state) == (saga.Status.COMPLETED, Order(n=15))
    handle = await rt.start(other, Order(), saga_id="c-new")
    await wait_until(rt, "c-new", saga.Status.WAITING)
    await rt.send("c-new", "go", 7)
    fresh = await handle.result(timeout=5)
    assert (fresh.status, fresh.state) == (saga.Status.COMPLETED, Order(n=17))


# -- definition mismatch --------------------------------------------------------------------


@pytest.mark.parametrize("definitions", list(MISMATCHES.values()), ids=list(MISMATCHES))
async def test_mismatched_definition_is_parked_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, definitions: list[saga.Saga[Any]]
) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    await two_waiting_sagas(url)
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        before = await rt.history("a-victim")

    caplog.set_level(logging.WARNING, logger="saga.runtime")
    async with saga.Runtime(url, sagas=[*definitions, other]) as rt:
        info = await rt.get("a-victim")
        assert info.error is not None
        assert info.error.type == "DefinitionMismatch"
        assert "a-victim" in info.error.message
        assert info.status is saga.Status.WAITING  # as the log left it
        with pytest.raises(saga.DefinitionMismatch, match="a-victim"):
            await rt.handle("a-victim").result(timeout=5)
        assert await rt.history("a-victim") == before
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and "a-victim" in r.message
        ]
        assert len(warnings) == 1
        assert "DefinitionMismatch" in warnings[0].message

        await other_sagas_still_run(rt)
        await anyio.sleep(0.02)
        assert await rt.history("a-victim") == before
        assert (await rt.get("b-other")).error is None

    # Intact: the right definition resumes it where it stopped.
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        assert (await rt.get("a-victim")).error is None
        await rt.send("a-victim", "go", 100)
        done = await rt.handle("a-victim").result(timeout=5)
        assert (done.status, done.state) == (saga.Status.COMPLETED, Order(n=111))
        assert (await rt.history("a-victim"))[: len(before)] == before


async def test_old_version_keeps_running_beside_a_new_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    await two_waiting_sagas(url)
    order_v2 = saga.Saga("order", state=Order, steps=[Reserve(), Pay(), Ship()], version=2)
    async with saga.Runtime(url, sagas=[order_v1, order_v2, other]) as rt:
        await rt.send("a-victim", "go", 100)
        old = await rt.handle("a-victim").result(timeout=5)
        assert (old.version, old.state, old.error) == (1, Order(n=111), None)
        handle = await rt.start("order", Order(), saga_id="new")
        await rt.send("new", "go", 100)
        new = await handle.result(timeout=5)
        assert (new.version, new.state) == (2, Order(n=1111))


async def test_a_terminal_saga_of_an_unknown_definition_is_readable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    async with saga.Runtime(url, sagas=[order_v1]) as rt:
        await rt.start(order_v1, Order(), saga_id="done")
        await wait_until(rt, "done", saga.Status.WAITING)
        await rt.send("done", "go", 1)
        await rt.handle("done").result(timeout=5)
        before = await rt.history("done")
    async with saga.Runtime(url, sagas=[other]) as rt:
        info = await rt.get("done")
        assert (info.status, info.error) == (saga.Status.COMPLETED, None)
        assert info.state == {"n": 12}  # plain values: no registered state type
        assert await rt.history("done") == before
        assert (await rt.handle("done").result(timeout=5)).status is saga.Status.COMPLETED


# -- corrupt records ------------------------------------------------------------------------


class Corruptible:
    """A store URL of either backend, and a way to corrupt one of its records."""

    def __init__(self, url: str, path: Path | None, schema: str | None) -> None:
        self.url, self.path, self.schema = url, path, schema

    async def overwrite(self, saga_id: str, seq: int, body: bytes) -> None:
        if self.path is not None:
            overwrite_body(self.path, saga_id, seq, body)
            return
        assert self.schema is not None
        rows = await query(
            self.schema,
            "UPDATE saga_log SET body = $1 WHERE saga_id = $2 AND seq = $3 RETURNING seq",
            body, saga_id, seq,
        )  # fmt: skip
        assert len(rows) == 1

    async def overwrite_row(self, saga_id: str, column: str, value: bytes) -> None:
        """Corrupt one column of the saga's index row."""
        if self.path is not None:
            conn = sqlite3.connect(self.path)
            try:
                with conn:
                    sql = f"UPDATE sagas SET {column} = ? WHERE saga_id = ?"
                    assert conn.execute(sql, (value, saga_id)).rowcount == 1
            finally:
                conn.close()
            return
        assert self.schema is not None
        sql = f"UPDATE sagas SET {column} = $1 WHERE saga_id = $2 RETURNING saga_id"
        assert len(await query(self.schema, sql, value, saga_id)) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def corruptible(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Corruptible]:
    if request.param == "sqlite":
        path = tmp_path / "orders.db"
        yield Corruptible(f"sqlite:///{path}", path, None)
        return
    with temporary_schema() as schema:
        yield Corruptible(url_for(schema), None, schema)


def overwrite_body(path: Path, saga_id: str, seq: int, body: bytes) -> None:
    """Corrupt one stored record; only while no runtime has the file open."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            cur = conn.execute(
                "UPDATE saga_log SET body = ? WHERE saga_id = ? AND seq = ?", (body, saga_id, seq)
            )
            assert cur.rowcount == 1
    finally:
        conn.close()


def record_body(**fields: Any) -> bytes:
    return msgspec.msgpack.encode(saga.Record(**fields))


WAIT_DATA = {"compensating": False, "event": "go", "key": None, "timeout": None, "deadline": None}
CORRUPTIONS = {  # (seq, body, can the record still be decoded?)
    "garbage-bytes": (3, b"\xc1\x00not msgpack at all\xff", False),
    "empty-body": (3, b"", False),
    "not-a-record": (3, msgspec.msgpack.encode({"hello": "world"}), False),
    "first-record": (1, b"\x00\x01\x02", False),
    "unknown-kind": (3, record_body(seq=3, kind="teleported", at=1.0, step="Reserve"), True),
    "seq-gap": (3, record_body(seq=9, kind="step_started", at=1.0, step="Pay",
                               data={"compensating": False, "handler": "run", "attempt": 1}), True),
    "wrong-step": (4, record_body(seq=4, kind="step_started", at=1.0, step="Reserve",
                                  data={"compensating": False, "handler": "run", "attempt": 1}),
                   True),
    "state-does-not-fit": (5, record_body(seq=5, kind="step_waiting", at=1.0, step="Pay",
                                          data={**WAIT_DATA, "state": {"n": "eleven"}}), True),
}  # fmt: skip


@pytest.mark.parametrize(
    ("seq", "body", "decodable"), list(CORRUPTIONS.values()), ids=list(CORRUPTIONS)
)
async def test_corrupt_record_parks_only_that_saga(
    corruptible: Corruptible,
    caplog: pytest.LogCaptureFixture,
    seq: int,
    body: bytes,
    decodable: bool,
) -> None:
    url = corruptible.url
    await two_waiting_sagas(url)
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        before = await rt.history("a-victim")
    assert [r.kind for r in before] == [
        "saga_started", "step_started", "step_completed", "step_started", "step_waiting",
    ]  # fmt: skip
    await corruptible.overwrite("a-victim", seq, body)

    caplog.set_level(logging.WARNING, logger="saga.runtime")
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        info = await rt.get("a-victim")
        assert info.error is not None
        assert info.error.type == "CorruptLog"
        assert info.status is saga.Status.WAITING
        with pytest.raises(saga.CorruptLog):
            await rt.handle("a-victim").result(timeout=5)
        if not decodable:
            with pytest.raises(saga.CorruptLog):
                await rt.history("a-victim")
        else:  # a readable record that does not fold: history shows the log as stored
            history = await rt.history("a-victim")
            assert history[seq - 1] == msgspec.msgpack.decode(body, type=saga.Record)
            assert history[: seq - 1] == before[: seq - 1]
            with pytest.raises(saga.CorruptLog):
                list(saga.replay(history, order_v1))
        assert any(
            r.levelno == logging.WARNING and "a-victim" in r.message and "CorruptLog" in r.message
            for r in caplog.records
        )
        await other_sagas_still_run(rt)
        # An event for the parked saga is kept, but the saga still does not run.
        await rt.send("a-victim", "go", 1)
        await anyio.sleep(0.02)
        info = await rt.get("a-victim")
        assert (info.status, info.seq, info.error.type) == (  # type: ignore[union-attr]
            saga.Status.WAITING,
            5,
            "CorruptLog",
        )


async def test_corrupt_record_in_a_finished_saga(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    url = f"sqlite:///{path}"
    async with saga.Runtime(url, sagas=[order_v1]) as rt:
        await rt.start(order_v1, Order(), saga_id="done")
        await wait_until(rt, "done", saga.Status.WAITING)
        await rt.send("done", "go", 1)
        await rt.handle("done").result(timeout=5)
    overwrite_body(path, "done", 2, b"\xc1")
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        info = await rt.get("done")
        assert (info.status, info.state) == (saga.Status.COMPLETED, Order(n=12))
        with pytest.raises(saga.CorruptLog):
            await rt.history("done")
        handle = await rt.start(other, Order(), saga_id="b-other")
        await wait_until(rt, "b-other", saga.Status.WAITING)
        await rt.send("b-other", "go", 1)
        assert (await handle.result(timeout=5)).state == Order(n=11)


class OrderWithText(msgspec.Struct):
    n: str = ""


async def test_state_type_changed_without_a_version_bump(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    await two_waiting_sagas(url)
    changed = saga.Saga("order", state=OrderWithText, steps=[Reserve(), Pay()], version=1)
    async with saga.Runtime(url, sagas=[changed, other]) as rt:
        info = await rt.get("a-victim")
        assert info.error is not None
        assert info.error.type == "CorruptLog"
        assert "OrderWithText" in info.error.message
        assert info.state == {"n": 11}  # it does not fit the type: shown as plain values
        with pytest.raises(saga.CorruptLog):
            await rt.handle("a-victim").result(timeout=5)
        listed = {i.saga_id: i for i in await rt.list()}
        assert listed.keys() == {"a-victim", "b-other"}
        assert listed["a-victim"] == info
        await other_sagas_still_run(rt)


@pytest.mark.parametrize("column", ["state", "error", "annotations"])
async def test_a_corrupt_index_row_is_a_clear_error_and_the_log_stays_readable(
    corruptible: Corruptible, column: str
) -> None:
    url = corruptible.url
    await two_waiting_sagas(url)
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        before = await rt.history("a-victim")
    await corruptible.overwrite_row("a-victim", column, b"\xc1 not msgpack")
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        with pytest.raises(saga.CorruptLog, match=r"a-victim.*index row"):
            await rt.get("a-victim")
        assert await rt.history("a-victim") == before  # the log itself is intact
        assert (await rt.get("b-other")).status is saga.Status.WAITING


async def parked_in_store(url: str, saga_id: str) -> saga.SagaInfo:
    """What a reader of the store (not the runtime that parked it) sees of ``saga_id``."""
    with anyio.fail_after(5):
        while True:
            info = await cli_info(url, saga_id)
            if info["parked"]:
                return info  # type: ignore[no-any-return]
            await anyio.sleep(0.02)


async def cli_info(url: str, saga_id: str) -> dict[str, Any]:
    result = await anyio.to_thread.run_sync(
        lambda: run_cli("show", saga_id, "--json", extra_env={"SAGA_DB": url})
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["saga"]  # type: ignore[no-any-return]


async def test_every_reader_sees_a_parked_saga_as_parked_with_its_error(tmp_path: Path) -> None:
    await parked_for_every_reader(f"sqlite:///{tmp_path / 'orders.db'}")


async def test_a_worker_hands_back_a_saga_it_cannot_run_and_says_why(schema: str) -> None:
    await parked_for_every_reader(url_for(schema, lease_seconds=1))


async def parked_for_every_reader(url: str) -> None:
    await two_waiting_sagas(url)
    steps_differ = MISMATCHES["steps-differ"]
    async with saga.Runtime(url, sagas=[*steps_differ, other]) as rt:
        with pytest.raises(saga.DefinitionMismatch):
            await rt.handle("a-victim").result(timeout=5)
        seen = await parked_in_store(url, "a-victim")
        assert seen["status"] == "WAITING"
        assert seen["error"]["type"] == "DefinitionMismatch"
        listed = await anyio.to_thread.run_sync(
            lambda: run_cli("list", extra_env={"SAGA_DB": url, "COLUMNS": "120"})
        )
        line = next(x for x in listed.stdout.splitlines() if x.startswith("a-victim"))
        assert "WAITING (parked)" in line
        shown = await anyio.to_thread.run_sync(
            lambda: run_cli("show", "a-victim", extra_env={"SAGA_DB": url, "COLUMNS": "120"})
        )
        assert "WAITING (parked)" in shown.stdout
        assert "DefinitionMismatch" in shown.stdout
        assert not (await cli_info(url, "b-other"))["parked"]
    # It stays parked in the store while no runtime can run it ...
    assert (await cli_info(url, "a-victim"))["parked"]
    # ... and a runtime with the right definition runs it, and nobody sees it parked.
    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        with anyio.fail_after(5):
            while (await rt.get("a-victim")).parked:  # noqa: ASYNC110 - a claim on PostgreSQL
                await anyio.sleep(0.02)
        await rt.send("a-victim", "go", 100)
        done = await rt.handle("a-victim").result(timeout=5)
        assert (done.status, done.parked, done.error) == (saga.Status.COMPLETED, False, None)
    assert not (await cli_info(url, "a-victim"))["parked"]


async def test_a_write_that_meets_a_damaged_page_parks_the_saga_instead_of_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'orders.db'}"
    await two_waiting_sagas(url)
    import saga._store._sqlite as sqlite_store

    def damaged(*args: Any) -> Any:
        error = sqlite3.DatabaseError("database disk image is malformed")
        error.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
        raise error

    async with saga.Runtime(url, sagas=[order_v1, other]) as rt:
        monkeypatch.setattr(sqlite_store, "apply_batch", damaged)
        with pytest.raises(saga.CorruptLog):  # the event cannot even be stored
            await rt.send("a-victim", "go", 1)
        monkeypatch.undo()
        await rt.send("a-victim", "go", 1)  # stored; delivering it meets the damage
        monkeypatch.setattr(sqlite_store, "apply_batch", damaged)
        with pytest.raises(saga.CorruptLog, match="damaged"):
            await rt.handle("a-victim").result(timeout=5)
        assert (await rt.get("a-victim")).parked
        assert not [r for r in caplog.records if "retrying in 1 s" in r.getMessage()]
