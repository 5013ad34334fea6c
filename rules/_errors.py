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

    The message reads ``"<source>: <path>: <message>"``, leaving out the parts that are empty.

    Attributes:
        message: What was wrong and what is accepted, without the path and source.
        path: Dotted key path of the offending value (``rules[2].minimum.BRL``), or ``""``.
        source: Where the configuration came from (a file name), or ``""``.
    """

    def __init__(self, message: str, *, path: str = "", source: str = "") -> None:
        self.message = message
        self.path = path
        self.source = source
        super().__init__(": ".join(part for part in (source, path, message) if part))

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields would be lost by the default pickling (multiprocessing).
        return (_rebuild, (type(self), self.message, self.path, self.source))


def _rebuild(
    cls: type[ConfigurationError], message: str, path: str, source: str
) -> ConfigurationError:
    return cls(message, path=path, source=source)
