"""Operator requests in a saga's inbox: who asked for an abort or a resume, and why.

The payload of an ``abort`` or ``resume`` inbox entry is ``{"reason": str, "by": str}``.
Stores written before ``by`` existed hold the bare reason string; both decode.
"""

from __future__ import annotations

from saga._records import decode_stored, encode_payload
from saga._validate import check_name, check_text

__all__ = ["decode_request", "encode_request"]


def encode_request(reason: str, by: str, limit: int) -> bytes:
    """The inbox payload of an operator request.

    Raises:
        TypeError: ``reason`` or ``by`` is not a str.
        ValueError: ``by`` is empty, too long or holds control characters; either holds
            NUL or text that cannot be encoded as UTF-8 (a lone surrogate).
        PayloadTooLarge: the encoded request is over ``limit`` bytes.
    """
    check_text(reason, "reason")
    check_name(by, "by")
    return encode_payload({"reason": reason, "by": by}, "request", limit)


def decode_request(payload: bytes, what: str = "an operator request") -> tuple[str, str | None]:
    """``(reason, by)`` of an operator request; ``by`` is ``None`` in an old store.

    Raises:
        CorruptLog: the payload cannot be decoded (``what`` names the request).
    """
    value = decode_stored(payload, what)
    if isinstance(value, dict):
        by = value.get("by")
        return str(value.get("reason", "")), None if by is None else str(by)
    return str(value), None
