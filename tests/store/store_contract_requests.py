"""The `Store` contract, part two: what operators and other processes rely on.

Resume requests, the inbox marks a runtime watches for entries other store instances wrote
(the ``peer`` fixture: another process's view of the same data), and the counts behind
``saga stats``. Mixed into `StoreContract`, so every backend runs it.
"""

from __future__ import annotations

from typing import Any

from store_contract_base import T0, ContractBase, body, records, row

from saga._store import Append, SendResult, Store


class RequestContract(ContractBase):
    async def failed(self, store: Store, saga_id: str, **fields: Any) -> None:
        """A saga that ended ``FAILED`` (its pending entries closed)."""
        await self.started(store, saga_id, **fields)
        current = await store.saga(saga_id)
        assert current is not None
        final = row(saga_id, seq=2, status="FAILED", step="Reserve", name=current.name,
                    created_at=current.created_at)  # fmt: skip
        await store.append(Append(saga_id, records(saga_id, 2, 2), final, closed="saga failed"))

    # -- resume requests ----------------------------------------------------------------------

    async def test_a_resume_request_is_stored_only_for_a_failed_saga(self, store: Store) -> None:
        await self.failed(store, "failed")
        await self.started(store, "open")
        await self.started(store, "done")
        await self.close_saga(store, "done", 1, "saga completed")
        assert await self.send(store, "failed", "r1", kind="resume") is SendResult.STORED
        assert await self.send(store, "open", "r2", kind="resume") is SendResult.REFUSED
        assert await self.send(store, "done", "r3", kind="resume") is SendResult.REFUSED
        assert await self.send(store, "ghost", "r4", kind="resume") is SendResult.UNKNOWN
        assert await self.send(store, "failed", "r1", kind="resume") is SendResult.DUPLICATE
        # Events and aborts still need an open saga.
        assert await self.send(store, "failed", "e1") is SendResult.CLOSED
        assert await self.send(store, "failed", "a1", kind="abort") is SendResult.CLOSED
        [item] = await store.inbox("failed")
        assert (item.event_id, item.kind) == ("r1", "resume")
        assert await store.inbox("open") == []

    async def test_pending_inbox_lists_one_kind_across_sagas_oldest_first(
        self, store: Store
    ) -> None:
        for saga_id in ("f1", "f2", "f3"):
            await self.failed(store, saga_id)
        await self.started(store, "open")
        await self.send(store, "f2", "r-f2", kind="resume")
        await self.send(store, "open", "e-open")
        await self.send(store, "f1", "r-f1", kind="resume")
        await self.send(store, "f3", "r-f3", kind="resume")
        resumed = row("f3", seq=3, status="COMPENSATING")
        await store.append(Append("f3", records("f3", 3, 3), resumed, consumed=["r-f3"]))
        pending = await store.pending_inbox("resume")
        assert [(i.saga_id, i.event_id) for i in pending] == [("f2", "r-f2"), ("f1", "r-f1")]
        assert [i.event_id for i in await store.pending_inbox("event")] == ["e-open"]
        assert await store.pending_inbox("abort") == []

    async def test_a_resume_taken_with_append_if_is_consumed_atomically(self, store: Store) -> None:
        await self.failed(store, "s1")
        await self.send(store, "s1", "r1", kind="resume")
        resumed = Append("s1", records("s1", 3, 3), row("s1", seq=3, status="COMPENSATING"),
                         consumed=["r1"])  # fmt: skip
        assert await store.append_if(resumed, status="FAILED")
        assert await store.inbox("s1") == []
        assert await store.pending_inbox("resume") == []

    async def test_a_refused_append_if_leaves_the_request_pending(self, store: Store) -> None:
        await self.failed(store, "s1")
        await self.send(store, "s1", "r1", kind="resume")
        stale = Append("s1", records("s1", 2, 2), row("s1", seq=2, status="COMPENSATING"),
                       consumed=["r1"])  # fmt: skip
        assert not await store.append_if(stale, status="FAILED")  # seq 2 is taken
        assert [i.event_id for i in await store.pending_inbox("resume")] == ["r1"]

    async def test_requests_pending_when_a_saga_closes_are_not_dead_letters(
        self, store: Store
    ) -> None:
        await self.failed(store, "s1")
        await self.send(store, "s1", "r1", kind="resume")
        await self.send(store, "s1", "r2", kind="resume")
        resumed = Append("s1", records("s1", 3, 3), row("s1", seq=3, status="COMPENSATING"),
                         consumed=["r1"])  # fmt: skip
        assert await store.append_if(resumed, status="FAILED")
        await self.send(store, "s1", "late-event")
        await self.close_saga(store, "s1", 3, "saga compensated")
        assert await store.inbox("s1") == []
        letters = await store.dead_letters("s1", 10)
        assert [(d.event_id, d.reason) for d in letters] == [("late-event", "saga compensated")]

    # -- entries from other store instances ---------------------------------------------------

    async def test_the_inbox_mark_never_goes_back(self, store: Store, peer: Store) -> None:
        # Marks are opaque positions: only their order and what `foreign_inbox` returns
        # after them are promised.
        await self.started(store, "s1")
        first = await store.inbox_mark()
        await self.send(store, "s1", "e1")
        second = await store.inbox_mark()
        await self.send(peer, "s1", "e2")
        await self.send(store, "s1", "e1")  # a duplicate stores nothing
        assert first <= second <= await store.inbox_mark()
        items, _ = await store.foreign_inbox(first)
        assert [i.event_id for i in items] == ["e2"]

    async def test_foreign_inbox_returns_what_a_peer_wrote_after_the_mark(
        self, store: Store, peer: Store
    ) -> None:
        await self.started(store, "s1")
        await self.failed(store, "f1")
        await self.send(store, "s1", "before", sent_at=T0)
        await self.send(peer, "s1", "peer-before")
        mark = await store.inbox_mark()
        items, later = await store.foreign_inbox(mark)
        assert items == []
        assert later >= mark

        await self.send(store, "s1", "own-1")
        await self.send(peer, "s1", "peer-1", name="shipped", key="k", sent_at=T0 + 1)
        await self.send(store, "s1", "own-2")
        await self.send(peer, "f1", "peer-resume", kind="resume", name="resume")
        await self.send(peer, "s1", "peer-abort", kind="abort", name="abort")
        items, mark2 = await store.foreign_inbox(mark)
        assert [(i.saga_id, i.event_id, i.kind) for i in items] == [
            ("s1", "peer-1", "event"),
            ("f1", "peer-resume", "resume"),
            ("s1", "peer-abort", "abort"),
        ]
        one = items[0]
        assert (one.name, one.key, one.payload, one.sent_at) == (
            "shipped", "k", b"payload:peer-1", T0 + 1,
        )  # fmt: skip
        assert mark2 >= mark
        # The next look starts past everything seen, this instance's own entries included.
        items, mark3 = await store.foreign_inbox(mark2)
        assert items == []
        await self.send(store, "s1", "own-3")
        items, mark4 = await store.foreign_inbox(mark3)
        assert items == []
        assert mark4 >= mark3 >= mark2

    async def test_foreign_inbox_skips_entries_consumed_meanwhile(
        self, store: Store, peer: Store
    ) -> None:
        await self.started(store, "s1")
        mark = await store.inbox_mark()
        await self.send(peer, "s1", "taken", kind="abort", name="abort")
        await self.send(peer, "s1", "left")
        await store.append(Append("s1", records("s1", 2, 2), row("s1", seq=2), ["taken"]))
        items, _ = await store.foreign_inbox(mark)
        assert [i.event_id for i in items] == ["left"]

    async def test_a_peer_sees_what_the_store_committed(self, store: Store, peer: Store) -> None:
        await self.started(store, "s1", status="WAITING")
        await self.failed(store, "f1")
        assert await peer.saga("s1") == row("s1", status="WAITING")
        assert await peer.log("f1") == [body("f1", 1), body("f1", 2)]
        assert await self.send(peer, "ghost", "e1") is SendResult.UNKNOWN
        assert await self.send(peer, "f1", "e1") is SendResult.CLOSED
        # Stored; a shared store also reports that the saga's owner is another instance.
        assert await self.send(peer, "s1", "e1") in (SendResult.STORED, SendResult.FORWARDED)
        assert [i.event_id for i in await store.inbox("s1")] == ["e1"]

    # -- stats --------------------------------------------------------------------------------

    async def test_stats_of_an_empty_store(self, store: Store) -> None:
        stats = await store.stats()
        assert (stats.counts, stats.oldest_waiting) == ([], None)

    async def test_stats_count_by_name_and_status_and_find_the_longest_wait(
        self, store: Store
    ) -> None:
        # updated_at is created_at + seq: "w-old" began waiting first though created last.
        await self.started(store, "w-new", name="trip", status="WAITING", created_at=T0 + 1,
                           seq=5)  # fmt: skip
        await self.started(store, "w-old", name="order", status="WAITING", created_at=T0 + 2,
                           seq=1)  # fmt: skip
        await self.started(store, "r1", name="trip")
        await self.started(store, "r2", name="trip")
        await self.failed(store, "f1", name="order")
        await self.started(store, "c1", name="trip")
        await self.close_saga(store, "c1", 1, "saga completed")
        stats = await store.stats()
        assert sorted(stats.counts) == [
            ("order", "FAILED", 1),
            ("order", "WAITING", 1),
            ("trip", "COMPLETED", 1),
            ("trip", "RUNNING", 2),
            ("trip", "WAITING", 1),
        ]
        assert stats.oldest_waiting == row(
            "w-old", name="order", status="WAITING", created_at=T0 + 2
        )
