"""Build fetchers, reservation stores and guards from a ``GuardConfig``.

Credentials are read here, from the environment variables the configuration names, at the
moment a fetcher is built; a variable that is missing or empty is a ``ConfigurationError``
naming it (never showing a value).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from guard._clock import Clock
from guard._config import ConfigSource, load_config
from guard._config_schema import (
    GuardConfig,
    LuxCoreProvider,
    LuxtakProvider,
    PagsmileProvider,
    ProviderConfig,
)
from guard._models import BalanceSnapshot
from guard._records import DecisionLog, JsonLinesDecisionLog, SqliteDecisionLog
from guard.errors import ConfigurationError
from guard.fetchers import (
    BalanceFetcher,
    LuxCoreFetcher,
    LuxtakFetcher,
    PagsmileFetcher,
    RetryPolicy,
)
from guard.stores import InMemoryReservations, ReservationStore

if TYPE_CHECKING:
    from guard._guard import GuardBase
    from guard.fetchers._http import Timeout
    from guard.stores.postgres import PostgresReservations

__all__ = [
    "NamedFetcher",
    "build_decision_log",
    "build_fetcher",
    "build_reservations",
    "configured_guard",
    "postgres_store",
]

GuardT = TypeVar("GuardT", bound="GuardBase")


class NamedFetcher:
    """A fetcher reporting under the configured provider name instead of its kind.

    Two accounts of one kind (``[providers.luxcore_ar]`` and ``[providers.luxcore_mx]``) must
    not share holds in a shared reservation store, and holds are keyed by provider name.
    """

    def __init__(self, inner: BalanceFetcher, name: str) -> None:
        self.inner = inner
        self._name = name

    @property
    def name(self) -> str:
        """Return the configured provider name."""
        return self._name

    def __repr__(self) -> str:
        return f"NamedFetcher({self._name!r}, {self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        # The inner fetcher's options the guard reads (deadline, requests_per_minute,
        # settle_lag): only public ones, so nothing private leaks through the wrapper.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def budget_name(self) -> str:
        """Return the inner fetcher's budget name under the configured provider name."""
        inner = getattr(self.inner, "budget_name", None)
        return self._name if not isinstance(inner, str) else f"{self._name}:{inner}"

    @property
    def balance_name(self) -> str:
        """Return the inner fetcher's balance name under the configured provider name."""
        inner = getattr(self.inner, "balance_name", None)
        return self.budget_name if not isinstance(inner, str) else f"{self._name}:{inner}"

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        """Return the inner fetcher's balances, relabelled with the configured name."""
        return [
            snapshot.model_copy(update={"provider": self._name})
            for snapshot in self.inner.fetch(currency)
        ]

    def close(self) -> None:
        """Close the inner fetcher."""
        _close(self.inner)


def _env_value(env: Mapping[str, str], var: str, path: str, what: str, source: str) -> str:
    value = env.get(var)
    if value is None or not value.strip():
        state = "is not set" if value is None else "is empty"
        raise ConfigurationError(
            f"environment variable {var} {state}; it must hold the {what}",
            path=path, source=source,
        )
    return value.strip()


def _seconds(value: Decimal) -> float:
    return float(value)  # money-ok: seconds


def _http_options(spec: ProviderConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"allow_insecure": spec.allow_insecure}
    if spec.base_url is not None:
        options["base_url"] = spec.base_url
    if spec.timeout is not None:
        timeout: Timeout = (
            (_seconds(spec.timeout[0]), _seconds(spec.timeout[1]))
            if isinstance(spec.timeout, tuple) else _seconds(spec.timeout)
        )
        options["timeout"] = timeout
    if spec.requests_per_minute is not None:
        options["requests_per_minute"] = spec.requests_per_minute or None
    if spec.settle_lag is not None:
        options["settle_lag"] = _seconds(spec.settle_lag)
    if spec.retry is not None:
        options["retry"] = RetryPolicy(
            attempts=spec.retry.attempts,
            deadline=_seconds(spec.retry.deadline),
            backoff=_seconds(spec.retry.backoff),
            max_backoff=_seconds(spec.retry.max_backoff),
            jitter=spec.retry.jitter,
        )
    return options


def _app_id(spec: LuxtakProvider | PagsmileProvider, env: Mapping[str, str], name: str,
            source: str) -> str:
    if spec.app_id is not None:
        return spec.app_id
    assert spec.app_id_env is not None  # noqa: S101 - the schema requires one of the two
    return _env_value(env, spec.app_id_env, f"providers.{name}.app_id_env", "app id", source)


def build_fetcher(
    config: GuardConfig, name: str, *, env: Mapping[str, str] | None = None
) -> BalanceFetcher:
    """Return the fetcher for provider *name*, credentials read from *env*.

    Args:
        config: A loaded configuration.
        name: A configured provider name.
        env: Where credentials are looked up (default ``os.environ``).

    Raises:
        ConfigurationError: *name* is not configured, a variable is missing or empty, or the
            fetcher refuses an option (the path names the provider's key).
    """
    env = os.environ if env is None else env
    spec = config.providers.get(name)
    if spec is None:
        config.pick_provider(name)  # raises, listing the configured names
        raise AssertionError  # pragma: no cover - pick_provider raised
    where, source = f"providers.{name}", config.source
    options = _http_options(spec)
    fetcher: BalanceFetcher
    if isinstance(spec, LuxtakProvider):
        app_id = _app_id(spec, env, name, source)
        key = _env_value(env, spec.app_key_env, f"{where}.app_key_env", "Luxtak app key", source)
    elif isinstance(spec, LuxCoreProvider):
        key = _env_value(env, spec.api_key_env, f"{where}.api_key_env", "LuxCore API key", source)
    else:
        app_id = _app_id(spec, env, name, source)
        key = _env_value(env, spec.security_key_env, f"{where}.security_key_env",
                         "Pagsmile security key", source)
    try:
        if isinstance(spec, LuxtakProvider):
            fetcher = LuxtakFetcher(app_id, key, **options)
        elif isinstance(spec, LuxCoreProvider):
            fetcher = LuxCoreFetcher(key, balance_type=spec.balance_type, **options)
        else:
            fetcher = PagsmileFetcher(app_id, key, available_field=spec.available_field,
                                      **options)
    except ConfigurationError as exc:
        # The fetcher names its own argument (base_url); say where it sits in the file.
        path = f"{where}.{exc.path}" if exc.path else where
        raise ConfigurationError(exc.message, path=path, source=source) from None
    return fetcher if name == spec.kind else NamedFetcher(fetcher, name)


def build_reservations(
    config: GuardConfig, *, env: Mapping[str, str] | None = None
) -> ReservationStore:
    """Return the reservation store the configuration describes.

    A relative SQLite ``path`` is taken from the configuration file's directory
    (``GuardConfig.resolve_path``), as ``rules_file`` and ``decision_log.path`` are.

    Raises:
        ConfigurationError: the store cannot be set up (a bad path, a missing ``url_env``
            variable); the path names the key.
    """
    env = os.environ if env is None else env
    spec, source = config.reservations, config.source
    retention = _seconds(spec.retention)
    if spec.store == "redis":
        return _redis(config, env)
    if spec.store == "postgres":
        return postgres_store(config, env=env)
    if spec.store == "sqlite":
        from guard.stores.sqlite import SqliteReservations  # noqa: PLC0415 - only when chosen

        assert spec.path is not None  # noqa: S101 - the schema requires it for sqlite
        extra = {} if spec.timeout is None else {"timeout": _seconds(spec.timeout)}
        try:
            return SqliteReservations(config.resolve_path(spec.path), retention=retention,
                                      **extra)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, path="reservations.path",
                                     source=source) from None
    return InMemoryReservations(retention=retention)


def postgres_store(
    config: GuardConfig, *, env: Mapping[str, str] | None = None, to_migrate: bool = False
) -> PostgresReservations:
    """Return the ``PostgresReservations`` of a ``store = "postgres"`` configuration.

    Args:
        config: A loaded configuration whose store is ``postgres``.
        env: Where ``dsn_env`` is looked up (default ``os.environ``).
        to_migrate: Skip the schema check (the ``store migrate`` command, which makes it).

    Raises:
        ConfigurationError: the store is not ``postgres``, the variable is not set, or the
            store cannot be set up; the path names the key.
    """
    from guard.stores.postgres import PostgresReservations  # noqa: PLC0415 - postgres extra

    env = os.environ if env is None else env
    spec = config.reservations
    if spec.store != "postgres" or spec.dsn_env is None:
        raise ConfigurationError(
            f"the reservation store is {spec.store!r}; this needs store = 'postgres'",
            path="reservations.store", source=config.source,
        )
    dsn = _env_value(env, spec.dsn_env, "reservations.dsn_env", "PostgreSQL DSN",
                     config.source)
    options: dict[str, Any] = {"retention": _seconds(spec.retention),
                               "check_schema": not to_migrate}
    if spec.namespace is not None:
        options["schema"] = spec.namespace
    if spec.timeout is not None:
        options["timeout"] = _seconds(spec.timeout)
    try:
        return PostgresReservations(dsn, **options)
    except ConfigurationError as exc:
        where = {"dsn": "dsn_env", "schema": "namespace"}.get(exc.path or "", exc.path or "store")
        raise ConfigurationError(exc.message, path=f"reservations.{where}",
                                 source=config.source) from None


def _redis(config: GuardConfig, env: Mapping[str, str]) -> ReservationStore:
    from guard.stores.redis import RedisReservations  # noqa: PLC0415 - needs the redis extra

    spec = config.reservations
    url, key = spec.url, "url"
    if spec.url_env is not None:
        url, key = _env_value(env, spec.url_env, "reservations.url_env", "Redis URL",
                              config.source), "url_env"
    assert url is not None  # noqa: S101 - the schema requires url or url_env for redis
    options: dict[str, Any] = {"retention": _seconds(spec.retention)}
    if spec.namespace is not None:
        options["namespace"] = spec.namespace
    if spec.timeout is not None:
        options["timeout"] = _seconds(spec.timeout)
    if spec.allow_eviction is not None:
        options["allow_eviction"] = spec.allow_eviction
    try:
        return RedisReservations(url, **options)
    except ConfigurationError as exc:
        path = key if exc.path == "url_or_client" else exc.path or "store"
        raise ConfigurationError(exc.message, path=f"reservations.{path}",
                                 source=config.source) from None


def configured_guard(
    guard_class: type[GuardT],
    source: ConfigSource,
    *,
    provider: object = None,
    env: Mapping[str, str] | None = None,
    reservations: ReservationStore | None = None,
    clock: Clock | None = None,
) -> GuardT:
    """Return the guard of the configured providers: what ``PayoutGuard.from_config`` does.

    Raises:
        ConfigurationError: see :meth:`PayoutGuard.from_config`.
    """
    config = load_config(source)
    names = config.pick_providers(provider)
    fetchers: list[BalanceFetcher] = []
    try:
        # Built one by one: when one fails, those already built are in the list to close.
        fetchers.extend(build_fetcher(config, name, env=env) for name in names)
        store = reservations if reservations is not None else build_reservations(config, env=env)
    except BaseException:
        for fetcher in fetchers:
            _close(fetcher)
        raise
    lags: dict[str, float] = {}
    for name in names:
        spec = config.providers[name]
        lag = spec.settle_lag if spec.settle_lag is not None else config.reservations.settle_lag
        if lag is not None:
            lags[name] = _seconds(lag)
    cache, routing = config.cache, config.routing
    refresh = cache.refresh_after_commit
    # A route lists the chosen providers it names (a pinned guard routes nowhere else).
    routes = {currency: kept for currency, route in routing.routes.items()
              if (kept := tuple(name for name in route if name in names))}
    return guard_class(
        fetchers if len(fetchers) > 1 else fetchers[0],
        config.ruleset,
        mode=config.mode,
        cache_ttl=_seconds(cache.ttl),
        reservations=store,
        fail_open=config.fail_open,
        settle_lag=lags or None,
        hold_ttl=_seconds(config.reservations.hold_ttl),
        uncertain_ttl=_seconds(config.reservations.uncertain_ttl),
        refresh_after_commit=None if refresh is False else _seconds(refresh),
        share_balances=cache.share_balances,
        max_stale=_seconds(cache.max_stale),
        own_payouts_window=_seconds(config.reservations.own_payouts_window),
        clock=clock,
        routing=routing.policy,
        routes=routes,
        decision_log=build_decision_log(config),
    )


_SQLITE_SUFFIXES = frozenset({".db", ".sqlite", ".sqlite3"})


def build_decision_log(config: GuardConfig) -> DecisionLog | None:
    """Return the decision log ``[decision_log]`` configures, or ``None`` without one.

    A relative path is taken from the configuration file's directory.
    """
    spec = config.decision_log
    if spec is None:
        return None
    path = config.resolve_path(spec.path)
    if path.suffix.lower() in _SQLITE_SUFFIXES:
        return SqliteDecisionLog(path)
    return JsonLinesDecisionLog(path, max_bytes=spec.max_bytes, backups=spec.backups)


def _close(thing: object) -> None:
    close = getattr(thing, "close", None)
    if callable(close):
        close()
