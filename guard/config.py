"""Configuration as data: ``load_config`` and ``GuardConfig``, and guards built from them.

A configuration file (TOML; YAML with the ``yaml`` extra; JSON) describes providers, rules,
the balance cache, the reservation store and the mode::

    from guard.config import load_config, guard_from_config

    config = load_config("guard.toml")
    guard = guard_from_config(config, provider="luxcore")   # credentials from the environment

See ``examples/guard.toml`` for every key.
"""

from guard._config import ConfigSource, load_config
from guard._config_build import (
    NamedFetcher,
    build_fetcher,
    build_guard,
    build_reservations,
    close_guard,
    guard_from_config,
)
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
    "build_guard",
    "build_reservations",
    "close_guard",
    "guard_from_config",
    "load_config",
]
