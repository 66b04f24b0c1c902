"""Retry policies: how many attempts a handler gets and how long to wait between them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saga._validate import MAX_ATTEMPTS, check_int, check_seconds

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
        try:  # a number of the wrong type is a bad number here, as it always was
            check_int(self.max_attempts, "max_attempts", 1, MAX_ATTEMPTS)
            check_seconds(self.initial_interval, "initial_interval")
            check_seconds(self.max_interval, "max_interval")
        except TypeError as error:
            raise ValueError(str(error)) from None
        backoff = self.backoff
        if not isinstance(backoff, int | float) or isinstance(backoff, bool):
            raise ValueError(f"backoff must be a number, got {type(backoff).__name__}")
        if not backoff >= 1 or not math.isfinite(backoff):  # NaN fails the first test
            raise ValueError(f"backoff must be a finite number >= 1, got {backoff!r}")
        if not isinstance(self.non_retryable, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.non_retryable
        ):
            raise TypeError("non_retryable must be a tuple of exception types")

    def interval(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        try:
            return min(self.initial_interval * self.backoff ** (attempt - 1), self.max_interval)
        except OverflowError:  # a growth past any float: the ceiling holds
            return float(self.max_interval)

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether failed attempt ``attempt`` with ``error`` gets another attempt."""
        return attempt < self.max_attempts and not isinstance(error, self.non_retryable)
