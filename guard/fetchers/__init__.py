"""Balance fetchers: the only code in payout-guard that talks to a provider.

Each fetcher implements :class:`BalanceFetcher` over HTTPS with ``requests``, retries under a
:class:`RetryPolicy`, and raises only :class:`~guard.errors.ProviderError` subclasses::

    from guard.fetchers import LuxCoreFetcher, RetryPolicy

    with LuxCoreFetcher(api_key, retry=RetryPolicy(attempts=3, deadline=5.0)) as fetcher:
        fetcher.fetch("ARS")
"""

from guard.fetchers._protocol import BalanceFetcher
from guard.fetchers._retry import RetryPolicy
from guard.fetchers.luxcore import LUXCORE_URL, LuxCoreFetcher
from guard.fetchers.luxtak import LUXTAK_PRODUCTION_URL, LUXTAK_SANDBOX_URL, LuxtakFetcher
from guard.fetchers.pagsmile import PAGSMILE_PRODUCTION_URL, PAGSMILE_SANDBOX_URL, PagsmileFetcher

__all__ = [
    "LUXCORE_URL",
    "LUXTAK_PRODUCTION_URL",
    "LUXTAK_SANDBOX_URL",
    "PAGSMILE_PRODUCTION_URL",
    "PAGSMILE_SANDBOX_URL",
    "BalanceFetcher",
    "LuxCoreFetcher",
    "LuxtakFetcher",
    "PagsmileFetcher",
    "RetryPolicy",
]
