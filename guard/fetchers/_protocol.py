"""The one protocol every balance source implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from guard._models import BalanceSnapshot

__all__ = ["BalanceFetcher"]


@runtime_checkable
class BalanceFetcher(Protocol):
    """A source of balances: a provider API, a static table in tests, a saved snapshot.

    ``fetch`` returns one snapshot per currency (only *currency* when given and the source can
    filter; a source may return more). It raises only :class:`~guard.errors.ProviderError`.
    """

    @property
    def name(self) -> str:
        """Return the provider name used in decisions and logs (``"luxcore"``)."""
        ...

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        """Return the current balances, or raise ``ProviderError``."""
        ...
