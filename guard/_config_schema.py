"""The shape of a payout-guard configuration, validated with pydantic (``extra="forbid"``).

One document describes providers, rules, the balance cache, the reservation store and the
mode. Secrets never sit in it: a provider names the environment variables that hold them
(``app_key_env = "LUXTAK_APP_KEY"``). Seconds may be integers or decimals; amounts only appear
in ``rules`` (the ``rules.load`` format) and are read as ``Decimal``.
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from guard._models import Mode
from guard._text import quoted
from guard.errors import ConfigurationError
from rules import RuleSet

__all__ = [
    "KINDS",
    "SECRET_FIELDS",
    "CacheConfig",
    "GuardConfig",
    "LuxCoreProvider",
    "LuxtakProvider",
    "PagsmileProvider",
    "ProviderConfig",
    "ReservationsConfig",
    "RetryConfig",
    "RoutingConfig",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

KINDS: tuple[str, ...] = ("luxtak", "luxcore", "pagsmile")
"""The provider kinds a configuration can name."""

SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "luxtak": ("app_key",),
    "luxcore": ("api_key",),
    "pagsmile": ("security_key",),
}
"""Per kind, the credentials that must come from the environment (``<name>_env``)."""

def closest(name: str, known: tuple[str, ...]) -> str:
    """Return ``"; did you mean 'x'?"`` for the known name closest to *name*, or ``""``."""
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {found[0]!r}?" if found else ""


def _matching(pattern: str, kind: str, wording: str) -> AfterValidator:
    """Return a check that a string matches *pattern*, refused in *wording* (value unshown)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise PydanticCustomError(kind, wording)
        return value

    return AfterValidator(check)


EnvName = Annotated[str, _matching(
    r"[A-Z_][A-Z0-9_]{0,127}", "env_name",
    "must be an environment variable name: upper-case letters, digits and _ (the value "
    "itself is not shown)",
)]
"""An environment variable name: upper case letters, digits and ``_`` (never a secret value)."""

ProviderName = Annotated[str, _matching(
    r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "provider_name",
    "must be letters, digits, '_', '.' or '-' (at most 64), starting with one",
)]
Seconds = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
PositiveSeconds = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RetryConfig(BaseModel):
    """How a fetcher retries (``guard.fetchers.RetryPolicy``)."""

    model_config = _STRICT

    attempts: int = Field(3, ge=1, le=100, strict=True)
    deadline: PositiveSeconds = Decimal(10)
    backoff: Seconds = Decimal("0.2")
    max_backoff: Seconds = Decimal(2)
    jitter: bool = Field(default=True, strict=True)


class _Provider(BaseModel):
    """Options every provider takes.

    ``requests_per_minute``: balance requests a minute the guard sends for this key (a whole
    number, or ``false`` for no limit; default: the fetcher's, 90 for LuxCore, none for the
    others). ``settle_lag``: seconds a sent payout may take to show in a balance (default: the
    fetcher's, 2 for LuxCore, 30 for the others).
    """

    model_config = _STRICT

    base_url: Text | None = None
    timeout: PositiveSeconds | tuple[PositiveSeconds, PositiveSeconds] | None = None
    retry: RetryConfig | None = None
    allow_insecure: bool = Field(default=False, strict=True)
    requests_per_minute: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] | Literal[
        False
    ] | None = None
    settle_lag: Seconds | None = None


class _AppId(_Provider):
    """A provider identified by an app id, given in the file or read from the environment."""

    app_id: Text | None = None
    app_id_env: EnvName | None = None

    @model_validator(mode="after")
    def _one_app_id(self) -> _AppId:
        if (self.app_id is None) == (self.app_id_env is None):
            raise ValueError(
                "give exactly one of app_id (the app id itself; it is not a secret) or "
                "app_id_env (the environment variable holding it)"
            )
        return self


class LuxtakProvider(_AppId):
    """Luxtak's payout balance (``guard.fetchers.LuxtakFetcher``)."""

    kind: Literal["luxtak"]
    app_key_env: EnvName


class LuxCoreProvider(_Provider):
    """LuxCore's balance (``guard.fetchers.LuxCoreFetcher``)."""

    kind: Literal["luxcore"]
    api_key_env: EnvName
    balance_type: Literal["main", "deposit", "withdrawal", "commission", "frozen"] = "main"


class PagsmileProvider(_AppId):
    """Pagsmile's merchant assets (``guard.fetchers.PagsmileFetcher``)."""

    kind: Literal["pagsmile"]
    security_key_env: EnvName
    available_field: Literal["balance", "payout", "net_income", "total_revenue"] = "balance"


ProviderConfig = Annotated[
    LuxtakProvider | LuxCoreProvider | PagsmileProvider, Field(discriminator="kind")
]


class CacheConfig(BaseModel):
    """The balance cache.

    ``ttl``: seconds a fetched balance is reused (0: every check fetches).
    ``refresh_after_commit``: after a commit, a balance older than this is fetched again
    (``false``: never). ``share_balances``: share balances and fetches through a SQLite or
    Redis store (default: on with those stores). ``max_stale``: seconds old a balance may be
    and still be used while the request budget is spent.
    """

    model_config = _STRICT

    ttl: Seconds = Decimal(5)
    refresh_after_commit: Seconds | Literal[False] = Decimal(1)
    share_balances: bool | None = Field(default=None, strict=True)
    max_stale: Seconds = Decimal(60)


class DecisionLogConfig(BaseModel):
    """Where every decision is recorded (the ``[decision_log]`` table; absent: nowhere).

    ``path``: the file, relative to the configuration's directory; a ``.db``, ``.sqlite`` or
    ``.sqlite3`` file is a SQLite database (``SqliteDecisionLog``), anything else JSON lines
    (``JsonLinesDecisionLog``). ``max_bytes`` and ``backups``: the JSON-lines file's rotation.
    """

    model_config = _STRICT

    path: Text
    max_bytes: int | None = Field(default=100 * 1024 * 1024, ge=1024, strict=True)
    backups: int = Field(default=5, ge=1, strict=True)


class RoutingConfig(BaseModel):
    """How a guard over several providers routes each payout (the ``[routing]`` table).

    ``policy``: ``"priority"`` (providers in file order, ``default_provider`` first) or
    ``"most_headroom"`` (the provider that could pay the most first). Every other key is a
    currency code naming the providers that may pay it, in priority order:
    ``BRL = ["luxtak", "pagsmile"]`` (each name must be configured).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    policy: Literal["priority", "most_headroom"] = "priority"

    @model_validator(mode="after")
    def _currency_routes(self) -> RoutingConfig:
        for key, route in (self.model_extra or {}).items():
            if not re.fullmatch(r"[A-Z]{3}", key):
                raise ValueError(
                    f"unknown key {quoted(key)}: [routing] takes policy and currency codes "
                    f"(such as BRL = [\"luxtak\", \"pagsmile\"])"
                )
            if (not isinstance(route, list) or not route
                    or not all(isinstance(name, str) for name in route)):
                raise ValueError(f"{key} must be a non-empty list of provider names")
            if len(set(route)) != len(route):
                raise ValueError(f"{key} names a provider twice")
        return self

    @property
    def routes(self) -> dict[str, tuple[str, ...]]:
        """Return currency -> the provider names that may pay it, in order."""
        return {key: tuple(route) for key, route in (self.model_extra or {}).items()}


_STORE_OPTIONS: dict[str, frozenset[str]] = {
    "memory": frozenset(),
    "sqlite": frozenset({"path", "timeout"}),
    "redis": frozenset({"url", "url_env", "namespace", "timeout", "allow_eviction"}),
    "postgres": frozenset({"dsn_env", "namespace", "timeout"}),
}


class ReservationsConfig(BaseModel):
    """Where in-flight payouts hold funds, and how long holds count.

    ``store`` is ``"memory"`` (one process), ``"sqlite"`` (``path``: processes on one host; a
    relative path is taken from the configuration's directory) or
    ``"redis"`` (``url`` or ``url_env``, optional ``namespace``: several hosts) or
    ``"postgres"`` (``dsn_env``: the variable holding the DSN, a secret never written in the
    file; optional ``namespace``: the schema, default ``payout_guard``).
    ``settle_lag``: seconds a sent payout may take to show in a balance, for every provider
    (a provider's own ``settle_lag`` wins; default: each fetcher's);
    ``own_payouts_window``: seconds our own committed payouts explain frozen funds to
    ``FrozenFunds``; ``hold_ttl``: seconds a pending hold lives; ``uncertain_ttl``: seconds a
    hold whose outcome is unknown keeps counting when nobody resolves it; ``retention``: seconds a
    finished payout id is remembered. ``allow_eviction`` (Redis only) accepts a server whose
    ``maxmemory-policy`` may evict holds.
    """

    model_config = _STRICT

    store: Literal["memory", "sqlite", "redis", "postgres"] = "memory"
    path: Text | None = None
    url: Text | None = None
    url_env: EnvName | None = None
    dsn_env: EnvName | None = None
    namespace: Text | None = None
    timeout: PositiveSeconds | None = None
    retention: Seconds = Decimal(86_400)
    settle_lag: Seconds | None = None
    own_payouts_window: Seconds = Decimal(3600)
    hold_ttl: PositiveSeconds = Decimal(300)
    uncertain_ttl: PositiveSeconds = Decimal(3600)
    allow_eviction: bool | None = None

    @model_validator(mode="after")
    def _options_fit_store(self) -> ReservationsConfig:
        allowed = _STORE_OPTIONS[self.store]
        given = {name for name in ("path", "url", "url_env", "dsn_env", "namespace", "timeout",
                                   "allow_eviction")
                 if getattr(self, name) is not None}
        if extra := sorted(given - allowed):
            raise ValueError(
                f"{', '.join(extra)} not used by store = {self.store!r}; it takes "
                f"{', '.join(sorted(allowed)) or 'no options'}"
            )
        if self.store == "sqlite" and self.path is None:
            raise ValueError("store = 'sqlite' needs path = \"<file>.db\"")
        if self.store == "sqlite" and (self.path or "").startswith((":memory:", "file:")):
            # Not a file path, so not one to take from the configuration's directory.
            raise ValueError("store = 'sqlite' needs the path of a database file the processes "
                             "share; use store = 'memory' for holds that live in one process")
        if self.store == "redis" and (self.url is None) == (self.url_env is None):
            raise ValueError(
                "store = 'redis' needs exactly one of url = \"redis://host:6379/0\" or "
                "url_env = \"REDIS_URL\" (use url_env when the URL carries a password)"
            )
        if self.store == "postgres" and self.dsn_env is None:
            raise ValueError(
                "store = 'postgres' needs dsn_env = \"PAYOUT_GUARD_PG_DSN\": the DSN carries a "
                "password, so it comes from the environment only"
            )
        if self.url is not None and "@" in self.url:
            raise ValueError(
                "url must not carry credentials; put the whole URL in an environment "
                "variable and name it with url_env"
            )
        return self


class GuardConfig(BaseModel):
    """A validated payout-guard configuration (build one with :func:`guard.load_config`).

    Attributes:
        mode: ``"enforce"`` or ``"dry_run"`` for every guard built from it.
        fail_open: Allow (with a warning) when no balance can be read.
        providers: Provider name -> its settings (``kind``, ``base_url``, options, the names of
            the environment variables holding its credentials).
        default_provider: The provider ``from_config`` picks when none is named.
        cache: The balance cache (``ttl`` seconds).
        reservations: The reservation store and hold timing.
        routing: How a guard over several providers routes payouts.
        decision_log: Where every decision is recorded (``None``: nowhere).
        rules: The rules, in the ``rules.load`` format (use :attr:`ruleset` for the rules).
        rules_file: A TOML/YAML rules file (relative to the configuration's directory) used
            instead of inline rules.
    """

    model_config = _STRICT

    _source: str = PrivateAttr(default="")
    _base_dir: Path | None = PrivateAttr(default=None)
    _ruleset: RuleSet | None = PrivateAttr(default=None)

    mode: Mode = "enforce"
    fail_open: bool = Field(default=False, strict=True)
    providers: dict[ProviderName, ProviderConfig] = {}
    default_provider: ProviderName | None = None
    cache: CacheConfig = CacheConfig()
    reservations: ReservationsConfig = ReservationsConfig()
    routing: RoutingConfig = RoutingConfig()
    decision_log: DecisionLogConfig | None = None
    rules: tuple[Any, ...] = ()
    rules_file: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _kind_from_name(cls, data: Any) -> Any:
        """Let ``[providers.luxtak]`` stand for ``kind = "luxtak"`` when kind is left out."""
        if isinstance(data, dict) and isinstance(data.get("providers"), dict):
            providers = dict(data["providers"])
            for name, spec in providers.items():
                if isinstance(spec, dict) and "kind" not in spec and name in KINDS:
                    providers[name] = {"kind": name, **spec}
            data = {**data, "providers": providers}
        return data

    @field_validator("default_provider")
    @classmethod
    def _known_provider(cls, value: str | None, info: ValidationInfo) -> str | None:
        providers = info.data.get("providers")
        if value is not None and providers is not None and value not in providers:
            known = ", ".join(providers) or "none are configured"
            raise ValueError(f"must name a configured provider ({known})")
        return value

    @model_validator(mode="after")
    def _one_rules_source(self) -> GuardConfig:
        if self.rules and self.rules_file is not None:
            raise ValueError("give rules inline ([[rules]]) or rules_file, not both")
        return self

    @property
    def source(self) -> str:
        """Return where the configuration was read from (a file name, or ``""``)."""
        return self._source

    def resolve_path(self, path: str) -> Path:
        """Return *path*, a file the configuration names, taken from the configuration's directory.

        A relative ``reservations.path`` or ``decision_log.path`` (like ``rules_file``) is taken
        from the directory of the file ``load_config`` read (the working directory at load time
        for a mapping or text), never from the working directory of whoever builds a guard:
        workers started from different directories share one store. ``~`` is expanded first;
        an absolute path is returned as is.
        """
        found = Path(path).expanduser()
        if found.is_absolute() or self._base_dir is None:
            return found
        return self._base_dir / found

    @property
    def ruleset(self) -> RuleSet:
        """Return the configured rules (loaded and checked by ``load_config``)."""
        if self._ruleset is None:
            return RuleSet()
        return self._ruleset

    @property
    def provider_names(self) -> tuple[str, ...]:
        """Return the configured provider names, in file order."""
        return tuple(self.providers)

    def pick_provider(self, name: str | None = None) -> str:
        """Return the provider a guard is built for: *name*, else the default, else the only one.

        Raises:
            ConfigurationError: *name* is not configured, no provider is configured, or there
                are several and neither *name* nor ``default_provider`` chooses one.
        """
        names = self.provider_names
        if name is not None:
            if name not in self.providers:
                raise ConfigurationError(
                    f"no provider named {quoted(name)}; configured: {', '.join(names) or 'none'}",
                    path="providers", source=self.source,
                )
            return name
        if self.default_provider is not None:
            return self.default_provider
        if len(names) == 1:
            return names[0]
        if not names:
            raise ConfigurationError(
                "no providers configured; add a [providers.<name>] table with kind = "
                "'luxtak', 'luxcore' or 'pagsmile'", path="providers", source=self.source,
            )
        raise ConfigurationError(
            f"{len(names)} providers are configured ({', '.join(names)}); name one "
            "(provider=... or --provider) or set default_provider",
            path="default_provider", source=self.source,
        )

    def pick_providers(self, chosen: object = None) -> tuple[str, ...]:
        """Return the providers a guard is built over, in priority order.

        *chosen* (``None``): every configured provider, ``default_provider`` first; a name:
        that one; a list of names: those, in its order.

        Raises:
            ConfigurationError: no provider is configured, *chosen* names one that is not,
                repeats one, or is neither a name nor a list of names.
        """
        names = self.provider_names
        if not names:
            raise ConfigurationError(
                "no providers configured; add a [providers.<name>] table with kind = "
                "'luxtak', 'luxcore' or 'pagsmile'", path="providers", source=self.source,
            )
        if chosen is None:
            first = self.default_provider
            return names if first is None else (first, *(n for n in names if n != first))
        given = [chosen] if isinstance(chosen, str) else chosen
        if not isinstance(given, list | tuple) or not given:
            raise ConfigurationError(
                f"provider must be a configured provider name or a non-empty list of them, "
                f"got {type(chosen).__name__}", path="provider", source=self.source,
            )
        for name in given:
            if not isinstance(name, str):
                raise ConfigurationError(
                    f"provider names must be strings, got {type(name).__name__}",
                    path="provider", source=self.source,
                )
            if name not in self.providers:
                raise ConfigurationError(
                    f"no provider named {name[:40]!r}; configured: {', '.join(names)}"
                    + closest(name, names), path="provider", source=self.source,
                )
        if len(set(given)) != len(given):
            raise ConfigurationError("names a provider twice", path="provider",
                                     source=self.source)
        return tuple(given)

    def env_vars(self) -> dict[str, str]:
        """Return every environment variable the configuration reads, with its key path."""
        found: dict[str, str] = {}
        for name, provider in self.providers.items():
            for field in type(provider).model_fields:
                if field.endswith("_env") and (var := getattr(provider, field)) is not None:
                    found[var] = f"providers.{name}.{field}"
        if self.reservations.url_env is not None:
            found[self.reservations.url_env] = "reservations.url_env"
        return found
