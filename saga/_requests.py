"""Operator requests in a saga's inbox: who asked for an abort or a resume, and why.

The payload of an ``abort`` or ``resume`` inbox entry is ``{"reason": str, "by": str}``.
Stores written before ``by`` existed hold the bare reason string; both decode.
"""

from __future__ import annotations

from saga._records import decode_payload, encode_payload
from saga._validate import check_name

__all__ = ["decode_request", "encode_request"]


def encode_request(reason: str, by: str, limit: int) -> bytes:
    """The inbox payload of an operator request.

    Raises:
        TypeError: ``reason`` or ``by`` is not a str.
        ValueError: ``by`` is empty, too long or holds control characters.
        PayloadTooLarge: the encoded request is over ``limit`` bytes.
    """
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a str, got {type(reason).__name__}")
    check_name(by, "by")
    return encode_payload({"reason": reason, "by": by}, "request", limit)


def decode_request(payload: bytes) -> tuple[str, str | None]:
    """``(reason, by)`` of an operator request; ``by`` is ``None`` in an old store."""
    value = decode_payload(payload)
    if isinstance(value, dict):
        by = value.get("by")
        return str(value.get("reason", "")), None if by is None else str(by)
    return str(value), None
