"""Shared hypothesis strategies: currencies, amounts at their exponent, facts and rules.

Import what you need: ``from tests.strategies import amounts, currencies, facts``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from functools import cache

from hypothesis import strategies as st

from rules import (
    ConfigurationError,
    CurrencyMinimums,
    Facts,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    SufficientFunds,
    all_of,
    any_of,
    when,
)
from rules.money import currency_exponent

__all__ = [
    "CURRENCIES",
    "PROVIDERS",
    "amounts",
    "builtin_rules",
    "currencies",
    "facts",
    "providers",
    "rule_trees",
]

#: Exponent 2 (BRL, ARS, MXN, USD), 0 (CLP, JPY) and 3 (KWD, BHD).
CURRENCIES = ("BRL", "ARS", "MXN", "USD", "CLP", "JPY", "KWD", "BHD")
PROVIDERS = ("luxtak", "luxcore", "pagsmile")

AmountBound = Decimal | str | int


def currencies() -> st.SearchStrategy[str]:
    """Return upper-case ISO 4217 codes, including exponents 0 (CLP, JPY) and 3 (KWD, BHD)."""
    return st.sampled_from(CURRENCIES)


def providers() -> st.SearchStrategy[str]:
    """Return provider names."""
    return st.sampled_from(PROVIDERS)


# Strategies are built once per argument set: rebuilding (and re-validating) a recursive
# strategy for every draw made the rule tests ten times slower.
@cache
def amounts(
    currency: str, *, min_value: AmountBound | None = None, max_value: AmountBound = 1_000_000
) -> st.SearchStrategy[Decimal]:
    """Return amounts of *currency* at its exponent, in ``[min_value, max_value]``.

    *min_value* defaults to the smallest unit (``0.01`` BRL, ``1`` CLP, ``0.001`` KWD): a
    payout amount. Pass ``min_value=0`` for balances.
    """
    exponent = currency_exponent(currency)
    low = 1 if min_value is None else int(Decimal(min_value).scaleb(exponent).to_integral_value())
    high = int(Decimal(max_value).scaleb(exponent).to_integral_value())
    return st.integers(min_value=low, max_value=high).map(lambda m: Decimal(m).scaleb(-exponent))


def _zero_or(currency: str, max_value: AmountBound) -> st.SearchStrategy[Decimal]:
    zero = Decimal(0).scaleb(-currency_exponent(currency))
    return st.just(zero) | amounts(currency, min_value=0, max_value=max_value)


@st.composite
def facts(draw: st.DrawFn, currency: str | None = None) -> Facts:
    """Return the facts of one payout, in *currency* or a drawn one.

    ``frozen`` and ``total`` are sometimes unreported (``None``); the fee and the holds are
    often zero.
    """
    code = currency if currency is not None else draw(currencies())
    available = draw(amounts(code, min_value=0))
    frozen = draw(st.none() | amounts(code, min_value=0))
    total = draw(
        st.none() | st.just(available + (frozen or 0)) | amounts(code, min_value=0)
    )
    return Facts(
        amount=draw(amounts(code)),
        currency=code,
        available=available,
        fee=draw(_zero_or(code, 100)),
        frozen=frozen,
        total=total,
        reserved=draw(_zero_or(code, 1_000_000)),
        age_seconds=draw(st.floats(0, 600, allow_nan=False) | st.integers(0, 600)),
        provider=draw(providers()),
        account=draw(st.none() | st.sampled_from(("acct_1", "acct_2"))),
    )


@st.composite
def _tables(draw: st.DrawFn, currency: str | None) -> dict[str, Decimal]:
    pool = CURRENCIES if currency is None else (currency, *CURRENCIES)
    codes = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
    return {code: draw(amounts(code, min_value=0)) for code in codes}


@cache
def builtin_rules(currency: str | None = None) -> st.SearchStrategy[Rule]:
    """Return built-in rules; their tables usually list *currency* when it is given."""
    tables = _tables(currency)
    percents = st.decimals(min_value=0, max_value="99.99", places=2)
    ratios = st.decimals(min_value=0, max_value=1, places=3)
    reserve = st.one_of(
        st.builds(ReserveMargin, percent=percents, basis=st.sampled_from(("available", "total"))),
        st.builds(ReserveMargin, minimum=tables),
        st.builds(ReserveMargin, percent=percents, minimum=tables),
    )
    minimums = st.one_of(
        st.builds(CurrencyMinimums, min_payout=tables),
        st.builds(CurrencyMinimums, min_remaining=tables),
        st.builds(CurrencyMinimums, min_payout=tables, min_remaining=tables),
    )
    return st.one_of(
        st.just(SufficientFunds()),
        reserve,
        st.builds(
            FrozenFunds,
            max_ratio=st.none() | ratios,
            when_unknown=st.sampled_from(("allow", "warn", "deny")),
        ),
        minimums,
        st.builds(MaxPayout, tables),
        st.builds(MaxBalanceAge, st.integers(0, 600) | st.decimals(0, 600, places=1)),
    )


def _scoped(currency: str | None) -> Callable[[st.SearchStrategy[Rule]], st.SearchStrategy[Rule]]:
    pool = CURRENCIES if currency is None else (currency, *CURRENCIES)
    scopes = st.none() | st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)
    names = st.none() | st.lists(providers(), min_size=1, max_size=2, unique=True)

    @st.composite
    def wrap(draw: st.DrawFn, inner: st.SearchStrategy[Rule]) -> Rule:
        rule = draw(inner)
        codes, who = draw(scopes), draw(names)
        if codes is None and who is None:
            codes = [draw(st.sampled_from(pool))]
        try:
            return when(rule, currency=codes, provider=who)
        except ConfigurationError:  # nested scopes that share nothing: keep the inner rule
            return rule

    return wrap


@cache
def rule_trees(currency: str | None = None, *, any_of_ok: bool = True) -> st.SearchStrategy[Rule]:
    """Return built-in rules composed a few levels deep with ``all_of``, ``any_of`` and ``when``.

    ``any_of_ok=False`` leaves ``any_of`` out (its alternatives may leave holes in the range).
    """
    wrap = _scoped(currency)

    def extend(children: st.SearchStrategy[Rule]) -> st.SearchStrategy[Rule]:
        options = [
            st.lists(children, max_size=4).map(lambda rules: all_of(*rules)),
            wrap(children),
        ]
        if any_of_ok:
            options.append(st.lists(children, min_size=1, max_size=4).map(lambda r: any_of(*r)))
        return st.one_of(options)

    return st.recursive(builtin_rules(currency), extend, max_leaves=8)
