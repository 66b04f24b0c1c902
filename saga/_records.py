"""The log's record: one frozen, tagged msgspec Struct, msgpack-encoded, with a format version.

Its ``data`` is a plain map, as stored and as users see it; its ``body`` is the same map
read as the Struct of its kind (`saga._bodies`: `StepStarted`, `StepWaiting`, ...). Bodies
are decoded here (`decode_body`, kept by `Record.body`) and nowhere else. A record the
runtime writes is built from its body (`new_record`), which it keeps, so a live record is
never decoded back.

Schema evolution follows msgspec's rules: a new field gets a default, a field is never
renamed or retyped. A new incompatible layout gets a new tag (``v=2``) and an upcaster in
`decode_record`, so every log ever written stays readable.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, overload

import msgspec

from saga._bodies import BODIES, RecordBody
from saga._errors import CorruptLog, PayloadTooLarge

__all__ = [
    "FORMAT_VERSION",
    "Record",
    "StoredRecord",
    "decode_body",
    "decode_payload",
    "decode_record",
    "decode_stored",
    "decode_stored_record",
    "decode_strings",
    "encode_payload",
    "encode_record",
    "new_record",
    "plain_record",
]

FORMAT_VERSION: Final = 1


class _KeptBody:
    """`Record.body`: decoded on first access, then kept in the record's ``__dict__``.

    Later lookups find it there before this descriptor, as with
    ``functools.cached_property``, which on Python 3.11 takes a lock on every first access:
    the fold reads the body of every record recovery decodes.
    """

    @overload
    def __get__(self, record: None, owner: type[Record]) -> _KeptBody: ...
    @overload
    def __get__(self, record: Record, owner: type[Record]) -> RecordBody: ...
    def __get__(self, record: Record | None, owner: type[Record]) -> RecordBody | _KeptBody:
        if record is None:
            return self
        body = record.__dict__["body"] = decode_body(record)
        return body


class Record(msgspec.Struct, frozen=True, tag_field="v", tag=FORMAT_VERSION, dict=True):
    """One entry of a saga's log.

    Attributes:
        seq: position in the saga's log, gapless from 1.
        kind: what happened, a `RecordKind` value (``saga_started``, ``step_started``, ...).
        at: epoch seconds, from the runtime's clock.
        step: the step's name, or ``None`` for saga-level records.
        data: the record's details, as plain values: the fields of its `body`.
        body: ``data`` read as the body of its kind (`StepStarted`, ...), decoded on first
            access and kept; raises `CorruptLog` if the kind is unknown or ``data`` does
            not fit its body.
    """

    seq: int
    kind: str
    at: float
    step: str | None = None
    data: dict[str, Any] = {}

    body: ClassVar[_KeptBody] = _KeptBody()


def decode_body(record: Record) -> RecordBody:
    """Read ``record.data`` as the body of its kind (use `Record.body`, which keeps it).

    Raises:
        CorruptLog: the kind is unknown, or ``data`` does not fit its body.
    """
    cls = BODIES.get(record.kind)
    if cls is None:
        raise CorruptLog(f"unknown record kind {record.kind!r} at seq {record.seq}")
    try:
        return msgspec.convert(record.data, cls)
    except msgspec.ValidationError as error:
        raise CorruptLog(f"bad {record.kind} record at seq {record.seq}: {error}") from None


def new_record(body: RecordBody, *, seq: int, at: float, step: str | None) -> Record:
    """The record of ``body``: its kind, its data, and the body itself, never decoded back."""
    record = Record(seq=seq, kind=body.kind, at=at, step=step, data=body.data())
    record.__dict__["body"] = body  # what `Record.body` would decode from ``data``
    return record


_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(Record)
_plain_decoder = msgspec.msgpack.Decoder()
_strings_decoder = msgspec.msgpack.Decoder(dict[str, str])


def encode_record(record: Record) -> bytes:
    """Encode ``record`` for the store."""
    return _encoder.encode(record)


# What decoding bytes that are not what they should be can raise (ValidationError is a
# DecodeError; TypeError: not bytes at all; RecursionError: nested too deeply).
_UNREADABLE = (msgspec.DecodeError, TypeError, RecursionError)


def decode_record(body: bytes) -> Record:
    """Decode a stored record. Raises `CorruptLog` if it is not a readable record."""
    try:
        return _record_decoder.decode(body)
    except _UNREADABLE as error:
        raise CorruptLog(f"unreadable record: {error}") from error


class StoredRecord(msgspec.Struct, frozen=True, tag_field="v", tag=FORMAT_VERSION, gc=False):
    """A stored record as a fold that shows it to nobody reads it: ``data`` stays bytes.

    Recovery folds the log of every open saga and hands no record to anyone, so it never
    builds the plain map a `Record` holds: ``body`` decodes the bytes straight into the
    body of the kind, which costs less than the map alone. Same layout as `Record`.
    """

    seq: int
    kind: str
    at: float
    step: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"\x80")  # an empty map, as `Record.data` defaults

    @property
    def body(self) -> RecordBody:
        """``data`` decoded as the body of its kind (each time; a fold reads it once).

        Raises:
            CorruptLog: the kind is unknown, or ``data`` does not fit its body.
        """
        decoder = _body_decoders.get(self.kind)
        if decoder is None:
            raise CorruptLog(f"unknown record kind {self.kind!r} at seq {self.seq}")
        try:
            return decoder.decode(self.data)
        except _UNREADABLE as error:
            raise CorruptLog(f"bad {self.kind} record at seq {self.seq}: {error}") from None


_stored_decoder = msgspec.msgpack.Decoder(StoredRecord)
_body_decoders = {kind: msgspec.msgpack.Decoder(cls) for kind, cls in BODIES.items()}


def decode_stored_record(body: bytes) -> StoredRecord:
    """Decode a stored record for a fold only. Raises `CorruptLog` if it is not readable."""
    try:
        return _stored_decoder.decode(body)
    except _UNREADABLE as error:
        raise CorruptLog(f"unreadable record: {error}") from error


def plain_record(record: Record) -> Record:
    """``record`` with plain values only, for code outside the runtime (observers).

    A record the runtime writes carries its saved state as the state's encoding
    (``msgspec.Raw``), so the state is encoded once for the record and the saga index and
    never decoded on the hot path. The bytes written are those of the plain state: an
    ordinary format-1 record.
    """
    state = record.data.get("state")
    if not isinstance(state, msgspec.Raw):
        return record
    plain = decode_payload(state)
    data = {**record.data, "state": plain}
    copy = Record(seq=record.seq, kind=record.kind, at=record.at, step=record.step, data=data)
    body = record.__dict__.get("body")
    if body is not None:  # a body with a state: SagaStarted, StepWaiting, StepCompleted
        copy.__dict__["body"] = msgspec.structs.replace(body, state=plain)
    return copy


def encode_payload(value: Any, what: str, limit: int) -> bytes:
    """Encode a payload or a state to msgpack, enforcing the size ``limit``.

    Raises:
        TypeError: msgspec cannot encode ``value`` (a type it does not know).
        ValueError: ``value`` holds text that is not valid Unicode (a lone surrogate), an
            int outside msgpack's 64-bit range, or is nested too deeply to encode.
        PayloadTooLarge: the encoding is longer than ``limit`` bytes.
    """
    try:
        body = _encoder.encode(value)
    except UnicodeEncodeError as error:  # a lone surrogate, in a str or a dict key
        raise ValueError(f"{what} holds text that is not valid Unicode: {error}") from None
    except OverflowError as error:  # an int msgpack cannot hold
        raise ValueError(f"{what} is not msgspec-encodable: {error}") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to encode") from None
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} is not msgspec-encodable: {error}") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"{what} is {len(body)} bytes encoded; the limit is {limit}")
    return body


def decode_stored(body: bytes | msgspec.Raw, what: str) -> Any:
    """Decode a stored value (a payload, a state, a request) to plain values.

    Every value read back from a store is decoded here or by `decode_record`, so that a
    damaged one is always the same error.

    Args:
        body: the stored bytes.
        what: the value, for the message (``"saga 'x': payload of event 'e'"``).

    Raises:
        CorruptLog: ``body`` is not a readable value; the message names ``what``.
    """
    try:
        return _plain_decoder.decode(body)
    except _UNREADABLE as error:
        raise CorruptLog(f"{what} cannot be decoded: {error}") from error


def decode_strings(body: bytes, what: str) -> dict[str, str]:
    """Decode a stored map of str to str (event headers, annotations).

    Raises:
        CorruptLog: ``body`` is not a readable map of str to str; the message names ``what``.
    """
    try:
        return _strings_decoder.decode(body)
    except _UNREADABLE as error:
        raise CorruptLog(f"{what} cannot be decoded: {error}") from error


def decode_payload(body: bytes | msgspec.Raw) -> Any:
    """Decode a stored payload or state to plain values (`decode_stored`, unnamed).

    Raises:
        CorruptLog: ``body`` is not a readable value.
    """
    return decode_stored(body, "a stored value")
