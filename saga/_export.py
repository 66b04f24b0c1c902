"""`SagaExport`: a saga's whole log as one self-contained, JSON-serialisable document."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from saga._errors import CorruptLog
from saga._fold import Progress
from saga._records import Record

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "SagaExport"]

EXPORT_FORMAT: Final = "saga-export"
EXPORT_VERSION: Final = 1


class SagaExport(msgspec.Struct, frozen=True, kw_only=True):
    """A saga's log with what is needed to read it anywhere: definition, steps, records.

    Get one from ``runtime.export(saga_id)`` or ``saga export ID`` on the command line;
    ``saga.replay(export, definition)`` folds it like a live history. It encodes with
    ``msgspec.json`` (`to_json`) and decodes with `from_json`. JSON has no bytes type:
    bytes in states or payloads come back as base64 strings, which a state type declaring
    ``bytes`` turns back into bytes.

    Attributes:
        format: always ``"saga-export"``: marks the document.
        format_version: the layout of this document (1).
        saga_id: the saga.
        name: the definition's name, as recorded in the log.
        version: the definition's version, as recorded in the log.
        steps: the definition's step names, as recorded in the log.
        exported_at: epoch seconds when the export was taken.
        records: every record of the log, in order.
    """

    format: str = EXPORT_FORMAT
    format_version: int = EXPORT_VERSION
    saga_id: str
    name: str
    version: int
    steps: tuple[str, ...]
    exported_at: float
    records: tuple[Record, ...]

    @classmethod
    def from_records(cls, records: Sequence[Record], exported_at: float) -> SagaExport:
        """Build an export of a log (``runtime.history``), its header read from ``saga_started``.

        Raises:
            CorruptLog: the log is empty or does not open with a valid ``saga_started``.
        """
        if not records:
            raise CorruptLog("the log is empty")
        first = Progress(records[0])
        return cls(
            saga_id=first.saga_id,
            name=first.name,
            version=first.version,
            steps=first.steps,
            exported_at=exported_at,
            records=tuple(records),
        )

    def to_json(self) -> bytes:
        """The export as JSON (UTF-8)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> SagaExport:
        """Read an export written by `to_json` (or ``saga export``).

        Raises:
            ValueError: not a saga export, a format this version cannot read, or a header
                that disagrees with its own first record.
        """
        try:
            export = msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as error:  # also covers ValidationError
            raise ValueError(f"not a saga export: {error}") from None
        export.check()
        return export

    def check(self) -> None:
        """Raise `ValueError` unless this is an export this version of saga can read."""
        if self.format != EXPORT_FORMAT:
            raise ValueError(f"not a saga export: format is {self.format!r}")
        if self.format_version != EXPORT_VERSION:
            raise ValueError(
                f"saga export format version {self.format_version} is not supported "
                f"(this saga reads version {EXPORT_VERSION})"
            )
        if not self.records:
            raise ValueError("the saga export holds no records")
        try:
            first = Progress(self.records[0])
        except CorruptLog as error:
            raise ValueError(f"the saga export's first record is unusable: {error}") from None
        header = (self.saga_id, self.name, self.version, self.steps)
        if header != (first.saga_id, first.name, first.version, first.steps):
            raise ValueError("the saga export's header disagrees with its saga_started record")
