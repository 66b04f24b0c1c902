"""The read commands: list, show, history, replay, dead-letters, export, stats.

Each returns an `Output`: the data ``--json`` prints, and the lines a person reads. They
use only the store's read methods, on a store opened read-only, and fold logs with the
runtime's own fold (`Progress`), so what they say is what a runtime would conclude.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, NamedTuple

import anyio
import msgspec

from saga._cli._format import WIDTH, ago, fields, fit, iso, offset, plain, show_json, table, wrap
from saga._cli._timeline import entries, next_wake, wait_data, waiting
from saga._errors import CorruptLog, UnknownSaga
from saga._export import SagaExport
from saga._fold import Progress
from saga._index import info_from_row
from saga._info import ErrorInfo, SagaInfo, Status
from saga._records import Record, decode_record, decode_stored
from saga._store import InboxItem, SagaRow, Store
from saga._validate import MAX_LIMIT

__all__ = ["READERS", "Output", "info_of_row", "read_log"]


class Output(NamedTuple):
    """What a command found: ``data`` for ``--json``, ``text`` for people."""

    data: Any
    text: list[str]


def info_of_row(row: SagaRow) -> SagaInfo:
    """The `SagaInfo` of an index row, its state as plain values (no definitions here)."""
    return info_from_row(row)


async def read_log(store: Store, saga_id: str) -> list[Record]:
    """The saga's decoded log. Raises `UnknownSaga`, or `CorruptLog` with the saga named."""
    bodies = await store.log(saga_id)
    if not bodies:
        raise UnknownSaga(f"no saga with id {saga_id!r}")
    try:
        return [decode_record(body) for body in bodies]
    except CorruptLog as error:
        raise CorruptLog(f"the log of saga {saga_id!r} cannot be read: {error}") from None


async def _row(store: Store, saga_id: str) -> SagaRow:
    row = await store.saga(saga_id)
    if row is None:
        raise UnknownSaga(f"no saga with id {saga_id!r}")
    return row


def _error(error: ErrorInfo | None) -> str:
    if error is None:
        return "-"
    return f"{error}" + (f" (step {error.step})" if error.step else "")


def _item(item: InboxItem) -> dict[str, Any]:
    return {"event_id": item.event_id, "kind": item.kind, "name": item.name, "key": item.key,
            "payload": decode_stored(item.payload, f"saga {item.saga_id!r}: payload of "
                                     f"inbox entry {item.event_id!r}"),
            "sent_at": item.sent_at}  # fmt: skip


def _status(info: SagaInfo) -> str:
    """The status column: a saga no runtime could run says so (its error says why)."""
    return f"{info.status.value} (parked)" if info.parked else info.status.value


# -- list -------------------------------------------------------------------------------------


async def list_sagas(store: Store, args: argparse.Namespace) -> Output:
    status = None if args.status is None else args.status.value
    rows = await store.sagas(status=status, name=args.name, limit=args.limit + 1)
    more = len(rows) > args.limit
    infos = [info_of_row(row) for row in rows[: args.limit]]
    if not infos:
        return Output([], ["no sagas" + (" match" if status or args.name else "")])
    now = time.time()
    cells = [[i.saga_id, i.name, str(i.version), _status(i), i.step or "-",
              ago(i.updated_at, now)] for i in infos]  # fmt: skip
    text = table(["ID", "NAME", "V", "STATUS", "STEP", "UPDATED"], cells, right=[2],
                 shrink=[0, 1, 4])  # fmt: skip
    count = f"{len(infos)} saga{'s' if len(infos) != 1 else ''}, newest first"
    if more and args.limit < MAX_LIMIT:
        count += f"; more with --limit {min(args.limit * 2, MAX_LIMIT)}"
    elif more:
        count += "; more exist: narrow with --status or --name"
    text.append(count)
    return Output([plain(i) for i in infos], text)


# -- show -------------------------------------------------------------------------------------


async def show(store: Store, args: argparse.Namespace) -> Output:
    row = await _row(store, args.saga_id)
    info = info_of_row(row)
    records = await read_log(store, args.saga_id)
    pending = await store.inbox(args.saga_id)
    dead = await store.dead_letters(args.saga_id, 1000)
    now = time.time()
    wait_text = retry_text = problem = None
    wait = None
    try:
        progress = Progress.from_records(records)
    except CorruptLog as error:
        problem = f"the log does not fold: {error}"
    else:
        wait_text, retry_text = waiting(progress, now), next_wake(progress, now)
        if wait_text is not None:
            wait = wait_data(progress)
    timeline = entries(records)
    data = {"saga": plain(info), "waiting": wait, "pending": [_item(i) for i in pending],
            "dead_letters": len(dead), "problem": problem, "timeline": plain(timeline)}  # fmt: skip

    pairs = [("status", _status(info)), ("step", info.step or "-")]
    if wait_text:
        pairs.append(("waiting", wait_text))
    if retry_text:
        pairs.append(("retrying", retry_text))
    pairs += [
        ("error", _error(info.error)),
        ("created", f"{iso(info.created_at)} ({ago(info.created_at, now)})"),
        ("updated", f"{iso(info.updated_at)} ({ago(info.updated_at, now)}), seq {info.seq}"),
        ("state", show_json(info.state)),
    ]
    if pending:
        names = ", ".join(f"{i.name} ({i.kind})" for i in pending)
        pairs.append(("inbox", f"{len(pending)} pending: {names}"))
    if dead:
        plural = "s" if len(dead) != 1 else ""
        hint = f"see: saga dead-letters {row.saga_id}"
        pairs.append(("dead", f"{len(dead)} dead letter{plural}; {hint}"))
    if problem:
        pairs.append(("problem", problem))
    if info.status is Status.FAILED:
        pairs.append(("next", f"fix the cause, then: saga resume {row.saga_id}"))
    if info.status is Status.SUSPENDED:
        i = row.saga_id
        pairs.append(("next", f"saga retry {i}, saga skip {i} or saga abort {i} (--reason)"))
    text = [f"saga {row.saga_id} ({info.name} v{info.version})", *fields(pairs), ""]
    direction = {"forward": "fwd", "compensating": "comp", None: ""}
    cells = [[str(e.seq), offset(e.offset), e.step or "-", direction[e.direction],
              "" if e.attempt is None else str(e.attempt), e.what] for e in timeline]  # fmt: skip
    text += table(["SEQ", "TIME", "STEP", "DIR", "ATT", "WHAT"], cells, right=[0, 4],
                  shrink=[2], wrap_last=True)  # fmt: skip
    return Output(data, text)


# -- history ----------------------------------------------------------------------------------


async def history(store: Store, args: argparse.Namespace) -> Output:
    records = await read_log(store, args.saga_id)
    text = []
    for record in records:
        step = f" {record.step}" if record.step else ""
        text.append(fit(f"#{record.seq} {iso(record.at, ms=True)} {record.kind}{step}", WIDTH))
        if record.data:
            text += ["    " + line for line in wrap(show_json(record.data), WIDTH - 4)]
    return Output([plain(r) for r in records], text)


# -- replay -----------------------------------------------------------------------------------


async def replay(store: Store, args: argparse.Namespace) -> Output:
    records = await read_log(store, args.saga_id)
    last = records[-1].seq
    at = last if args.at is None else args.at
    if at > last:
        raise ValueError(f"saga {args.saga_id!r} has records 1 to {last}; --at {at} is past them")
    try:
        progress = Progress.from_records(records[:at])
    except CorruptLog as error:
        raise CorruptLog(f"the log of saga {args.saga_id!r} does not fold: {error}") from None
    info = progress.info()
    record = records[at - 1]
    wait_text = waiting(progress, record.at)  # a deadline as seen at that record
    data = {"saga": plain(info), "record": plain(record), "last_seq": last,
            "waiting": wait_data(progress) if wait_text else None}  # fmt: skip
    step = f" {record.step}" if record.step else ""
    pairs = [
        ("record", f"#{at} {record.kind}{step} at {offset(record.at - records[0].at)}"
                   f" ({iso(record.at, ms=True)})"),
        ("status", info.status.value),
        ("step", info.step or "-"),
        ("error", _error(info.error)),
    ]  # fmt: skip
    if wait_text:
        pairs.append(("waiting", wait_text))
    pairs.append(("state", show_json(info.state)))
    title = f"saga {args.saga_id} ({info.name} v{info.version}) as of record {at} of {last}"
    return Output(data, [title, *fields(pairs)])


# -- dead letters -----------------------------------------------------------------------------


async def dead_letters(store: Store, args: argparse.Namespace) -> Output:
    if args.saga_id is not None:
        await _row(store, args.saga_id)
    rows = await store.dead_letters(args.saga_id, args.limit)
    data = [{"saga_id": r.saga_id, "event_id": r.event_id, "name": r.name, "key": r.key,
             "payload": decode_stored(r.payload, f"saga {r.saga_id!r}: payload of dead "
                                      f"letter {r.event_id!r}"),
             "sent_at": r.sent_at, "reason": r.reason}
            for r in rows]  # fmt: skip
    if not rows:
        return Output(data, ["no dead letters"])
    now = time.time()
    cells = [[ago(d["sent_at"], now), d["saga_id"], d["name"], d["key"] or "-", d["reason"],
              show_json(d["payload"])] for d in data]  # fmt: skip
    text = table(["SENT", "SAGA", "EVENT", "KEY", "REASON", "PAYLOAD"], cells,
                 shrink=[1, 2, 3, 4, 5])  # fmt: skip
    text.append(f"{len(rows)} dead letter{'s' if len(rows) != 1 else ''}, newest first")
    return Output(data, text)


# -- export -----------------------------------------------------------------------------------


async def export(store: Store, args: argparse.Namespace) -> Output:
    records = await read_log(store, args.saga_id)
    document = SagaExport.from_records(records, time.time())
    encoded = msgspec.json.format(document.to_json(), indent=2).decode()
    if args.output in (None, "-"):
        return Output(plain(document), encoded.splitlines())
    await anyio.Path(args.output).write_text(encoded + "\n", encoding="utf-8")
    summary = {"saga_id": args.saga_id, "records": len(records), "file": args.output}
    line = f"exported saga {args.saga_id} ({len(records)} records) to {args.output}"
    return Output(summary, wrap(line, WIDTH))


# -- stats ------------------------------------------------------------------------------------


async def stats(store: Store, args: argparse.Namespace) -> Output:
    found = await store.stats()
    statuses = [s.value for s in Status]
    by_status = dict.fromkeys(statuses, 0)
    by_name: dict[str, dict[str, int]] = {}
    for name, status, count in found.counts:
        by_status[status] = by_status.get(status, 0) + count
        counts = by_name.setdefault(name, {**dict.fromkeys(statuses, 0), "total": 0})
        counts[status] = counts.get(status, 0) + count
        counts["total"] += count
    total = sum(by_status.values())
    oldest: dict[str, Any] | None = None
    now = time.time()
    if found.oldest_waiting is not None:
        row = found.oldest_waiting
        wait: dict[str, Any] = dict.fromkeys(("name", "key", "deadline"))
        with contextlib.suppress(CorruptLog, UnknownSaga):  # the count matters more
            wait = wait_data(Progress.from_records(await read_log(store, row.saga_id))) or wait
        oldest = {"saga_id": row.saga_id, "name": row.name, "step": row.step,
                  "since": row.updated_at, "event": wait["name"], "key": wait["key"],
                  "deadline": wait["deadline"]}  # fmt: skip
    data = {"total": total, "by_status": by_status, "by_name": by_name, "oldest_waiting": oldest}

    text = [f"{total} saga{'s' if total != 1 else ''}", ""]
    if by_name:
        cells = [[name, *(str(c[s]) for s in statuses), str(c["total"])]
                 for name, c in sorted(by_name.items())]  # fmt: skip
        cells.append(["all", *(str(by_status[s]) for s in statuses), str(total)])
        text += table(["NAME", *statuses, "TOTAL"], cells, right=range(1, 8), shrink=[0])
        text.append("")
    if oldest is None:
        text.append("longest wait: none (no saga is WAITING)")
    else:
        what = f"{oldest['event']}" + (f" key={oldest['key']}" if oldest["key"] else "")
        text += fields([("longest", f"{oldest['saga_id']} ({oldest['name']}), step "
                        f"{oldest['step']}, waiting for {what} since {iso(oldest['since'])} "
                        f"({ago(oldest['since'], now)})")], label_width=9)  # fmt: skip
    return Output(data, text)


READERS: dict[str, Any] = {
    "list": list_sagas,
    "show": show,
    "history": history,
    "replay": replay,
    "dead-letters": dead_letters,
    "export": export,
    "stats": stats,
}
