"""The one check for durations the guard is given: ttls, lags, deadlines, timeouts.

Every option measured in seconds, whether passed to ``PayoutGuard``, a store, a fetcher or
``RetryPolicy``, or read from a configuration file (where it arrives as a ``Decimal``), goes
through :func:`seconds`, so they all accept the same values and refuse the rest alike.
"""

from __future__ import annotations

import math
from decimal import Decimal

from guard.errors import ConfigurationError

__all__ = ["MAX_SECONDS", "seconds"]

MAX_SECONDS = 30 * 86_400.0
"""The longest duration accepted (30 days): long enough for any payout, short enough that
every store can express it (Redis ``EXPIRE``, float seconds)."""


def seconds(
    value: object, name: str, *, positive: bool = False, most: float = MAX_SECONDS
) -> float:
    """Return *value* (``int``, ``float`` or ``Decimal``) as seconds, or refuse it.

    Args:
        value: The duration.
        name: The option's name, for the message.
        positive: Refuse zero too (a ttl of nothing), not only negative durations.
        most: The largest duration accepted (default 30 days).

    Raises:
        ConfigurationError: *value* is not a number (``bool`` is not one), is NaN or
            infinite, or is out of bounds; the message says what is accepted.
    """
    bounds = f"{'> 0' if positive else '>= 0'} and <= {most:g}"
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigurationError(
            f"must be a number of seconds {bounds}, got {type(value).__name__}", path=name
        )
    number = float(value)  # money-ok: seconds
    if not math.isfinite(number) or number < 0 or (positive and number == 0) or number > most:
        raise ConfigurationError(
            f"must be a finite number of seconds {bounds}, got {str(value)[:40]}", path=name
        )
    return number
