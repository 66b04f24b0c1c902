"""Retry policies: how many attempts a handler gets and how long to wait between them."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for a failing handler. Waits between attempts are durable timers.

    Args:
        max_attempts: attempts in all, the first included (``1`` means no retry).
        initial_interval: seconds before the second attempt.
        backoff: factor applied to the interval after each further attempt.
        max_interval: ceiling for any single interval, in seconds.
        non_retryable: exception types that fail the handler at once.
    """

    max_attempts: int = 1
    initial_interval: float = 1.0
    backoff: float = 2.0
    max_interval: float = 60.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for field in ("initial_interval", "backoff", "max_interval"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{field} must be a finite number >= 0, got {value!r}")
        if self.backoff < 1:
            raise ValueError(f"backoff must be >= 1, got {self.backoff!r}")
        if not isinstance(self.non_retryable, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.non_retryable
        ):
            raise TypeError("non_retryable must be a tuple of exception types")

    def interval(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether failed attempt ``attempt`` with ``error`` gets another attempt."""
        return attempt < self.max_attempts and not isinstance(error, self.non_retryable)
