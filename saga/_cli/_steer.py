"""The write commands, abort, resume, retry, skip and revert: a durable request the owning
runtime acts on.

The command line never takes the store's lock and never writes a saga's log. It stores a
request in the saga's inbox (with the same atomic checks the runtime's own calls use),
then watches for a while whether the running runtime took it. No runtime running is not an
error: the request waits in the store, and the next runtime to open it acts on it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import time
import uuid

import anyio

from saga._cli._commands import Output, info_of_row
from saga._cli._format import WIDTH, wrap
from saga._errors import UnknownSaga
from saga._info import Status
from saga._requests import encode_request
from saga._store import InboxKind, SendResult, Store
from saga._store._vocabulary import REQUEST_STATUS
from saga._validate import MAX_NAME_LENGTH

__all__ = ["WRITERS", "operator"]

_POLL = 0.1
_LIMIT = 1 << 20  # the runtime's default max_payload_bytes


def operator() -> str:
    """Who runs this command: ``cli:USER@HOST``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a container
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}@{socket.gethostname()}"[:MAX_NAME_LENGTH]


async def _status(store: Store, saga_id: str) -> str:
    row = await store.saga(saga_id)
    return "-" if row is None else info_of_row(row).status.value


async def _taken(store: Store, saga_id: str, request_id: str, wait: float) -> bool:
    """Whether the runtime took the request (it left the pending inbox) within ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        if all(item.event_id != request_id for item in await store.inbox(saga_id)):
            return True
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(_POLL)


async def _request(store: Store, args: argparse.Namespace, kind: str) -> Output:
    saga_id = args.saga_id
    by = args.by or operator()
    payload = encode_request(args.reason, by, _LIMIT)
    request_id = f"{kind}-{uuid.uuid4().hex}"
    result = await store.send(saga_id, request_id, kind=kind, name=kind, key=None,
                              payload=payload, sent_at=time.time())  # fmt: skip
    if result is SendResult.UNKNOWN:
        raise UnknownSaga(f"no saga with id {saga_id!r}")
    status = await _status(store, saga_id)
    data = {"saga_id": saga_id, "request": kind, "request_id": None, "by": by,
            "reason": args.reason, "outcome": "", "status": status}  # fmt: skip
    if result is SendResult.REFUSED:  # a request a runtime performs, in another status
        needed = REQUEST_STATUS[kind]
        raise ValueError(
            f"saga {saga_id!r} is {status}, not {needed}: only a {needed} saga can be {_DONE[kind]}"
        )
    if result not in (SendResult.STORED, SendResult.FORWARDED):  # an abort of a saga that ended
        data["outcome"] = "ended"
        line = f"saga {saga_id} has already ended ({status}): there is nothing to abort."
        return Output(data, wrap(line, WIDTH))
    data["request_id"] = request_id
    taken = await _taken(store, saga_id, request_id, args.wait)
    data["status"] = status = await _status(store, saga_id)
    data["outcome"] = "taken" if taken else "pending"
    first = f"{kind} of saga {saga_id} requested by {by}."
    if taken:
        then = f"The runtime took the request: saga {saga_id} is now {status}."
        if kind == InboxKind.RESUME and status == Status.FAILED.value:
            then += f" A compensation failed again; see: saga show {saga_id}"
    elif kind == InboxKind.ABORT:
        then = (
            "The request is stored but not taken yet: no runtime is running on this store, "
            "or a step handler is still running (an abort waits for it to return). The "
            "saga's runtime acts on it as soon as it can."
        )
    else:
        then = (
            "The request is stored but not taken yet: no runtime is running on this store. "
            f"The next runtime to open it acts on it ({kind})."
        )
    return Output(data, wrap(first, WIDTH) + wrap(then, WIDTH))


async def abort(store: Store, args: argparse.Namespace) -> Output:
    return await _request(store, args, InboxKind.ABORT)


async def resume(store: Store, args: argparse.Namespace) -> Output:
    return await _request(store, args, InboxKind.RESUME)


async def retry(store: Store, args: argparse.Namespace) -> Output:
    return await _request(store, args, InboxKind.RETRY)


async def skip(store: Store, args: argparse.Namespace) -> Output:
    return await _request(store, args, InboxKind.SKIP)


async def revert(store: Store, args: argparse.Namespace) -> Output:
    return await _request(store, args, InboxKind.REVERT)


_DONE = {
    InboxKind.RESUME: "resumed",
    InboxKind.RETRY: "retried",
    InboxKind.SKIP: "skipped",
    InboxKind.REVERT: "reverted",
}

WRITERS = {"abort": abort, "resume": resume, "retry": retry, "skip": skip, "revert": revert}
