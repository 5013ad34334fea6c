"""Balance fetchers: the only code in payout-guard that talks to a provider."""

from guard.fetchers._protocol import BalanceFetcher

__all__ = ["BalanceFetcher"]
