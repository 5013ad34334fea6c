"""The root of payout-guard's exception tree, and the rule configuration error.

They live here, in the pure ``rules`` package, because ``rules.load`` raises
``ConfigurationError`` and ``rules`` may never import ``guard``. ``guard.errors`` re-exports
both and draws the whole tree; users should import them from there.
"""

from __future__ import annotations


class GuardError(Exception):
    """Base class of every error payout-guard raises on purpose."""


class ConfigurationError(GuardError, ValueError):
    """A rule or guard configuration is invalid.

    Attributes:
        path: Dotted key path of the offending value (``rules[2].minimum.BRL``), or ``""``.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
