"""`JsonLinesSink`: state changes appended to a file, one JSON object per line."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import msgspec

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    """Appends each `StateChange` to ``path`` as one JSON object per line (JSON Lines).

    Safe for many concurrent sagas: lines queued while a write is in progress are written
    together by the next one, in order, and a line is never split or interleaved. Writes
    run in a worker thread, so the event loop never blocks on the disk. The file is
    opened for each write (append mode), so it may be rotated or removed between writes.
    Any JSON tool reads the result (``jq``, ``json.loads`` per line). ``from_status`` and
    ``to_status`` are status strings; the state is encoded as msgspec encodes it to JSON.

    Args:
        path: the file; created on the first write, appended to afterwards.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._encoder = msgspec.json.Encoder()
        self._batch = _Batch()  # lines waiting for the next write
        self._lock = anyio.Lock()
        self._file_lock = threading.Lock()  # also serializes sinks shared across event loops

    def __repr__(self) -> str:
        return f"JsonLinesSink({str(self.path)!r})"

    async def __call__(self, change: msgspec.Struct) -> None:
        """Append ``change`` (a `StateChange`, or any Struct); returns once its line is written.

        Raises:
            TypeError: the change's state cannot be encoded to JSON.
            OSError: the file cannot be written.
        """
        batch = self._batch
        batch.lines.append(self._encoder.encode(change) + b"\n")
        async with self._lock:
            if not batch.written:  # else the writer before us took our line along
                self._batch = _Batch()
                # Shielded: a cancelled caller must not release the lock while its thread
                # is still writing, or the next write could interleave with it.
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(self._write, b"".join(batch.lines))
                    except OSError as error:
                        batch.error = error
                    finally:
                        batch.written = True
        if batch.error is not None:
            raise OSError(f"could not append to {self.path}: {batch.error}") from batch.error

    def _write(self, body: bytes) -> None:
        with self._file_lock, self.path.open("ab") as file:
            file.write(body)


class _Batch:
    __slots__ = ("error", "lines", "written")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.written = False
        self.error: OSError | None = None
