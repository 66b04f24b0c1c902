"""Bad input gets a clear, typed error and stores nothing; stores are opened with care."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
from _wait import wait_until

import saga

pytestmark = pytest.mark.anyio

LIMIT = 2_000


class Cart(msgspec.Struct):
    items: list[str] = []
    got: list[Any] = []


calls: Counter[str] = Counter()


class Collect(saga.Step):
    async def run(self, ctx: saga.StepContext[Cart]) -> saga.Wait:
        calls["Collect.run"] += 1
        return saga.wait_for("item", key="k")

    async def on_event(self, ctx: saga.StepContext[Cart], event: saga.Event) -> saga.Wait | None:
        calls["Collect.on_event"] += 1
        ctx.state.got.append(event.payload)
        return None if event.payload == "last" else saga.wait_for("item", key="k")


class Grow(saga.Step):
    retry = saga.RetryPolicy(max_attempts=5, initial_interval=0.0)

    async def run(self, ctx: saga.StepContext[Cart]) -> None:
        calls["Grow.run"] += 1
        ctx.state.items.append("x" * (2 * LIMIT))


class Undo(saga.Step):
    async def run(self, ctx: saga.StepContext[Cart]) -> None:
        ctx.state.items.append("undo-me")

    async def compensate(self, ctx: saga.StepContext[Cart]) -> None:
        calls["Undo.compensate"] += 1


cart = saga.Saga("cart", state=Cart, steps=[Collect()])
growing = saga.Saga("growing", state=Cart, steps=[Undo(), Grow()])

BAD_IDS: list[Any] = ["", "x" * 256, "a\nb", "nul\x00", "del\x7f", "\ttab"]
WRONG_TYPES: list[Any] = [None, 5, b"bytes"]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


async def waiting_cart(rt: saga.Runtime) -> list[saga.Record]:
    await rt.start(cart, Cart(), saga_id="c")
    await wait_until(rt, "c", saga.Status.WAITING)
    return await rt.history("c")


async def assert_next_event_is(rt: saga.Runtime, payload: Any) -> None:
    """Nothing was stored by the failed sends: the next good event is the first delivered."""
    await rt.send("c", "item", "last", key="k")
    info = await rt.handle("c").result(timeout=5)
    assert info.state.got == [payload]


# -- ids and names --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_and_names_are_rejected(store_url: str, bad: str) -> None:
    async with saga.Runtime(store_url, sagas=[cart]) as rt:
        before = await waiting_cart(rt)
        with pytest.raises(ValueError, match="saga_id"):
            await rt.start(cart, Cart(), saga_id=bad)
        with pytest.raises(ValueError, match="saga name"):
            await rt.start(bad, Cart())
        with pytest.raises(ValueError, match="saga_id"):
            await rt.send(bad, "item", "x", key="k")
        with pytest.raises(ValueError, match="event name"):
            await rt.send("c", bad, "x", key="k")
        with pytest.raises(ValueError, match="key"):
            await rt.send("c", "item", "x", key=bad)
        with pytest.raises(ValueError, match="event_id"):
            await rt.send("c", "item", "x", key="k", event_id=bad)
        with pytest.raises(ValueError, match="saga_id"):
            await rt.abort(bad, "why")
        with pytest.raises(ValueError, match="saga_id"):
            await rt.get(bad)
        with pytest.raises(ValueError, match="saga_id"):
            await rt.history(bad)
        with pytest.raises(ValueError, match="saga_id"):
            rt.handle(bad)
        assert [i.saga_id for i in await rt.list()] == ["c"]
        assert await rt.history("c") == before
        await assert_next_event_is(rt, "last")


@pytest.mark.parametrize("wrong", WRONG_TYPES)
async def test_ids_of_the_wrong_type(store_url: str, wrong: Any) -> None:
    async with saga.Runtime(store_url, sagas=[cart]) as rt:
        before = await waiting_cart(rt)
        bad_id: Any = 0 if wrong is None else wrong  # None asks for a generated id
        with pytest.raises(TypeError, match="saga_id"):
            await rt.start(cart, Cart(), saga_id=bad_id)
        with pytest.raises(TypeError, match="saga_id"):
            await rt.send(wrong, "item", "x", key="k")
        with pytest.raises(TypeError, match="event name"):
            await rt.send("c", wrong, "x", key="k")
        with pytest.raises(TypeError, match="saga_id"):
            await rt.get(wrong)
        with pytest.raises(TypeError):
            await rt.abort("c", wrong)  # the reason must be a str
        assert await rt.history("c") == before
        await assert_next_event_is(rt, "last")


async def test_longest_allowed_id_and_names_work(store_url: str) -> None:
    long = "x" * 255
    long_cart = saga.Saga(long, state=Cart, steps=[Collect()])
    async with saga.Runtime(store_url, sagas=[long_cart]) as rt:
        handle = await rt.start(long, Cart(), saga_id=long)
        await wait_until(rt, long, saga.Status.WAITING)
        await rt.send(long, "item", "last", key="k", event_id=long)
        info = await handle.result(timeout=5)
        assert (info.saga_id, info.name, info.state.got) == (long, long, ["last"])


# -- definitions and state ------------------------------------------------------------------


async def test_unknown_definitions(store_url: str) -> None:
    lookalike = saga.Saga("cart", state=Cart, steps=[Collect()])
    stranger = saga.Saga("stranger", state=Cart, steps=[Collect()])
    async with saga.Runtime(store_url, sagas=[cart]) as rt:
        with pytest.raises(saga.UnknownDefinition, match="nope"):
            await rt.start("nope", Cart())
        with pytest.raises(saga.UnknownDefinition):
            await rt.start(lookalike, Cart(), saga_id="a")
        with pytest.raises(saga.UnknownDefinition):
            await rt.start(stranger, Cart(), saga_id="b")
        with pytest.raises(LookupError):
            await rt.start("Cart", Cart())
        assert await rt.list() == []
    assert calls == {}


class NotCart(msgspec.Struct):
    items: list[str] = []


@pytest.mark.parametrize("state", [NotCart(), {"items": []}, None, "cart"])
async def test_state_of_the_wrong_type(store_url: str, state: Any) -> None:
    async with saga.Runtime(store_url, sagas=[cart]) as rt:
        with pytest.raises(TypeError, match="Cart"):
            await rt.start(cart, state, saga_id="a")
        with pytest.raises(TypeError, match="Cart"):
            await rt.start("cart", state, saga_id="a")
        assert await rt.list() == []
        with pytest.raises(saga.UnknownSaga):
            await rt.history("a")


@pytest.mark.parametrize("payload", [object(), 1j, {"fn": print}, [Cart, 1], {("a", 1): object()}])
async def test_payload_that_cannot_be_encoded(store_url: str, payload: Any) -> None:
    async with saga.Runtime(store_url, sagas=[cart]) as rt:
        before = await waiting_cart(rt)
        with pytest.raises(TypeError, match="payload"):
            await rt.send("c", "item", payload, key="k")
        assert await rt.history("c") == before
        await assert_next_event_is(rt, "last")


async def test_state_that_cannot_be_encoded(store_url: str) -> None:
    class Bad(msgspec.Struct):
        thing: Any = None

    bad = saga.Saga("bad", state=Bad, steps=[Collect()])
    async with saga.Runtime(store_url, sagas=[bad]) as rt:
        with pytest.raises(TypeError, match="state"):
            await rt.start(bad, Bad(thing=object()), saga_id="b")
        assert await rt.list() == []
    assert calls == {}


# -- sizes ----------------------------------------------------------------------------------


async def test_oversized_state_at_start(store_url: str) -> None:
    async with saga.Runtime(store_url, sagas=[cart], max_payload_bytes=LIMIT) as rt:
        with pytest.raises(saga.PayloadTooLarge, match=str(LIMIT)):
            await rt.start(cart, Cart(items=["x" * LIMIT]), saga_id="big")
        assert await rt.list() == []
        with pytest.raises(saga.UnknownSaga):
            await rt.get("big")
        # Just under the limit is fine.
        await rt.start(cart, Cart(items=["x" * (LIMIT - 50)]), saga_id="ok")
        info = await wait_until(rt, "ok", saga.Status.WAITING)
        assert info.state.items == ["x" * (LIMIT - 50)]
        assert [i.saga_id for i in await rt.list()] == ["ok"]


async def test_oversized_payload_and_reason(store_url: str) -> None:
    async with saga.Runtime(store_url, sagas=[cart], max_payload_bytes=LIMIT) as rt:
        before = await waiting_cart(rt)
        with pytest.raises(saga.PayloadTooLarge):
            await rt.send("c", "item", "x" * LIMIT, key="k")
        with pytest.raises(saga.PayloadTooLarge):
            await rt.send("c", "item", {"blob": b"\0" * LIMIT}, key="k")
        with pytest.raises(saga.PayloadTooLarge):
            await rt.abort("c", "why" * LIMIT)
        assert await rt.history("c") == before
        assert (await rt.get("c")).status is saga.Status.WAITING
        await assert_next_event_is(rt, "last")


async def test_state_that_grows_too_large_in_a_step_fails_without_retry(store_url: str) -> None:
    async with saga.Runtime(store_url, sagas=[growing], max_payload_bytes=LIMIT) as rt:
        info = await (await rt.start(growing, Cart(), saga_id="g")).result(timeout=5)
        history = await rt.history("g")
    assert info.status is saga.Status.COMPENSATED
    assert info.error is not None
    assert (info.error.type, info.error.step) == ("PayloadTooLarge", "Grow")
    assert calls == {"Grow.run": 1, "Undo.compensate": 1}
    failed = [r for r in history if r.kind == "step_failed"]
    assert len(failed) == 1
    assert failed[0].step == "Grow"
    assert failed[0].data["error"]["type"] == "PayloadTooLarge"
    assert failed[0].data["final"] is True
    assert failed[0].data["retry_at"] is None
    # The oversized state was never saved.
    assert info.state == Cart(items=["undo-me"])
    assert all(len(msgspec.msgpack.encode(r.data)) < LIMIT for r in history)


# -- store URLs and files -------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(saga.StoreError, match="does not exist"):
        async with saga.Runtime(f"sqlite:///{missing / 'x.db'}", sagas=[cart]):
            pass
    assert not (tmp_path / "no").exists()


async def test_a_text_file_is_not_a_saga_store(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes\n" * 100)
    before = digest(path)
    with pytest.raises(saga.NotASagaStore):
        async with saga.Runtime(f"sqlite:///{path}", sagas=[cart]):
            pass
    assert digest(path) == before
    assert {p.name for p in tmp_path.iterdir()} <= {"notes.txt", "notes.txt.lock"}


async def test_another_sqlite_database_is_not_a_saga_store(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.close()
    before = digest(path)
    with pytest.raises(saga.NotASagaStore):
        async with saga.Runtime(f"sqlite:///{path}", sagas=[cart]):
            pass
    assert digest(path) == before
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
        assert tables == ["users"]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://localhost/db", "redis:///x", "saga.db", "/tmp/saga.db", "sqlite:/x.db", "sqlite://"],
)
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        saga.Runtime(url, sagas=[cart])


async def test_a_second_runtime_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    async with saga.Runtime(url, sagas=[cart]) as first:
        before = await waiting_cart(first)
        with pytest.raises(saga.StoreError, match="in use"):
            async with saga.Runtime(url, sagas=[cart]):
                pass
        assert await first.history("c") == before
        await assert_next_event_is(first, "last")
    async with saga.Runtime(url, sagas=[cart]) as again:
        assert (await again.get("c")).state.got == ["last"]


async def test_two_runtimes_on_two_files_do_not_interfere(tmp_path: Path) -> None:
    one = saga.Runtime(f"sqlite:///{tmp_path / 'one.db'}", sagas=[cart])
    two = saga.Runtime(f"sqlite:///{tmp_path / 'two.db'}", sagas=[cart])
    async with one, two:
        await one.start(cart, Cart(items=["one"]), saga_id="same")
        await two.start(cart, Cart(items=["two"]), saga_id="same")
        await wait_until(one, "same", saga.Status.WAITING)
        await wait_until(two, "same", saga.Status.WAITING)
        await one.send("same", "item", "from-one", key="k")
        await one.send("same", "item", "last", key="k")
        first = await one.handle("same").result(timeout=5)
        assert first.state == Cart(items=["one"], got=["from-one", "last"])
        second = await two.get("same")
        assert second.status is saga.Status.WAITING
        assert second.state == Cart(items=["two"])
        assert len(await two.history("same")) == 3
        await two.abort("same", "no")
        assert (await two.handle("same").result(timeout=5)).status is saga.Status.COMPENSATED
        assert (await one.get("same")).status is saga.Status.COMPLETED
        assert [i.saga_id for i in await one.list()] == ["same"]
