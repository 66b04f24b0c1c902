"""The log's record: one frozen, tagged msgspec Struct, msgpack-encoded, with a format version.

Schema evolution follows msgspec's rules: a new field gets a default, a field is never
renamed or retyped. A new incompatible layout gets a new tag (``v=2``) and an upcaster in
`decode_record`, so every log ever written stays readable.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from saga._errors import CorruptLog, PayloadTooLarge

__all__ = [
    "FORMAT_VERSION",
    "Kind",
    "Record",
    "decode_payload",
    "decode_record",
    "decode_stored",
    "decode_strings",
    "encode_payload",
    "encode_record",
    "plain_record",
]

FORMAT_VERSION: Final = 1


class Kind:
    """Record kinds. Each is a plain string in `Record.kind`."""

    SAGA_STARTED: Final = "saga_started"
    STEP_STARTED: Final = "step_started"
    STEP_WAITING: Final = "step_waiting"
    EVENT_DELIVERED: Final = "event_delivered"
    WAIT_TIMED_OUT: Final = "wait_timed_out"
    STEP_COMPLETED: Final = "step_completed"
    STEP_FAILED: Final = "step_failed"
    ABORT_REQUESTED: Final = "abort_requested"
    COMPENSATION_STARTED: Final = "compensation_started"
    SAGA_COMPLETED: Final = "saga_completed"
    SAGA_COMPENSATED: Final = "saga_compensated"
    SAGA_FAILED: Final = "saga_failed"
    SAGA_RESUMED: Final = "saga_resumed"

    TERMINAL: Final = frozenset({SAGA_COMPLETED, SAGA_COMPENSATED, SAGA_FAILED})


class Record(msgspec.Struct, frozen=True, tag_field="v", tag=FORMAT_VERSION):
    """One entry of a saga's log.

    Attributes:
        seq: position in the saga's log, gapless from 1.
        kind: what happened (``saga_started``, ``step_started``, ...).
        at: epoch seconds, from the runtime's clock.
        step: the step's name, or ``None`` for saga-level records.
        data: the record's details, as plain values. Step records carry ``compensating``;
            records that end a handler carry the saved ``state``.
    """

    seq: int
    kind: str
    at: float
    step: str | None = None
    data: dict[str, Any] = {}


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
    data = {**record.data, "state": decode_payload(state)}
    return Record(seq=record.seq, kind=record.kind, at=record.at, step=record.step, data=data)


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
