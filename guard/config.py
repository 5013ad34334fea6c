"""Configuration as data: ``load_config`` and ``GuardConfig``, and guards built from them.

A configuration file (TOML; YAML with the ``yaml`` extra; JSON) describes providers, rules,
the balance cache, the reservation store and the mode::

    from guard import PayoutGuard, load_config

    config = load_config("guard.toml")                       # validated, rules loaded
    guard = PayoutGuard.from_config(config, provider="luxcore")   # credentials from the env

See ``examples/guard.toml`` for every key.
"""

from guard._config import ConfigSource, load_config
from guard._config_build import NamedFetcher, build_fetcher, build_reservations
from guard._config_schema import (
    CacheConfig,
    GuardConfig,
    LuxCoreProvider,
    LuxtakProvider,
    PagsmileProvider,
    ProviderConfig,
    ReservationsConfig,
    RetryConfig,
)

__all__ = [
    "CacheConfig",
    "ConfigSource",
    "GuardConfig",
    "LuxCoreProvider",
    "LuxtakProvider",
    "NamedFetcher",
    "PagsmileProvider",
    "ProviderConfig",
    "ReservationsConfig",
    "RetryConfig",
    "build_fetcher",
    "build_reservations",
    "load_config",
]
