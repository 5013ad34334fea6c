"""The exception tree (guard.errors): shape, fields, messages and pickling."""

from __future__ import annotations

import pickle

import pytest

import guard.errors
import rules
from guard import (
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutDenied,
    PayoutGuard,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.testing import StaticFetcher

PROVIDER_ERRORS = [ProviderError, ProviderAuthError, ProviderRateLimited, ProviderUnavailable,
                   ProviderResponseError]


class TestTree:
    @pytest.mark.parametrize(
        ("cls", "bases"),
        [
            (InvalidPayoutRequest, (GuardError, ValueError)),
            (ConfigurationError, (GuardError, ValueError)),
            (PayoutDenied, (GuardError,)),
            (ProviderError, (GuardError,)),
            (ProviderAuthError, (ProviderError,)),
            (ProviderRateLimited, (ProviderError,)),
            (ProviderUnavailable, (ProviderError,)),
            (ProviderResponseError, (ProviderError,)),
            (GuardError, (Exception,)),
        ],
    )
    def test_each_error_sits_where_the_design_puts_it(
        self, cls: type[Exception], bases: tuple[type[Exception], ...]
    ) -> None:
        """The tree of DESIGN.md, including the built-in errors shared in meaning."""
        assert all(issubclass(cls, base) for base in bases)

    def test_configuration_error_is_the_rule_engines(self) -> None:
        """The rules and guard packages raise one and the same ConfigurationError."""
        assert (rules.ConfigurationError, rules.ConfigurationError.__mro__[1]) == (
            ConfigurationError, GuardError
        )

    def test_the_module_docstring_draws_every_error(self) -> None:
        """Every exported error appears in the tree drawn in the module docstring."""
        doc = guard.errors.__doc__ or ""
        assert [] == [name for name in guard.errors.__all__ if name not in doc]


class TestProviderError:
    def test_carries_structured_fields(self) -> None:
        """provider, status, code, attempts and the bare message are attributes."""
        exc = ProviderUnavailable("gateway timeout", provider="luxcore", status=504,
                                  code="E504", attempts=3)
        assert ("luxcore", 504, "E504", 3, "gateway timeout") == (
            exc.provider, exc.status, exc.code, exc.attempts, exc.message
        )

    @pytest.mark.parametrize(
        ("kwargs", "expected"),
        [
            ({}, "luxtak: bad body, after 1 attempt"),
            ({"status": 500}, "luxtak: bad body, HTTP 500, after 1 attempt"),
            ({"code": "4004003", "attempts": 2},
             "luxtak: bad body, code 4004003, after 2 attempts"),
            ({"status": 401, "code": "X", "attempts": 5},
             "luxtak: bad body, HTTP 401, code X, after 5 attempts"),
        ],
    )
    def test_str_names_the_provider_status_code_and_attempts(
        self, kwargs: dict[str, object], expected: str
    ) -> None:
        """The message a person reads says who failed, how, and after how many tries."""
        exc = ProviderResponseError("bad body", provider="luxtak", **kwargs)  # type: ignore[arg-type]  # the parametrized fields
        assert expected == str(exc)

    @pytest.mark.parametrize("cls", PROVIDER_ERRORS)
    def test_pickles_with_every_field(self, cls: type[ProviderError]) -> None:
        """A provider error crosses a process boundary intact (multiprocessing)."""
        exc = cls("down", provider="pagsmile", status=503, code="MAINT", attempts=4)
        back = pickle.loads(pickle.dumps(exc))
        assert (cls, "down", "pagsmile", 503, "MAINT", 4, str(exc)) == (
            type(back), back.message, back.provider, back.status, back.code, back.attempts,
            str(back),
        )

    def test_rate_limited_has_no_retry_after_by_default(self) -> None:
        """retry_after is None when the provider did not say."""
        assert ProviderRateLimited("slow down", provider="luxcore").retry_after is None

    def test_rate_limited_pickles_its_retry_after(self) -> None:
        """retry_after, set by the fetchers after construction, survives pickling."""
        exc = ProviderRateLimited("slow down", provider="luxcore", status=429)
        exc.retry_after = 12.0
        back = pickle.loads(pickle.dumps(exc))
        assert 12.0 == back.retry_after


class TestConfigurationError:
    @pytest.mark.parametrize(
        ("kwargs", "expected"),
        [
            ({}, "must be > 0"),
            ({"path": "rules[2].minimum.BRL"}, "rules[2].minimum.BRL: must be > 0"),
            ({"path": "cache_ttl", "source": "guard.toml"}, "guard.toml: cache_ttl: must be > 0"),
        ],
    )
    def test_message_reads_source_path_message(
        self, kwargs: dict[str, str], expected: str
    ) -> None:
        """Empty parts are left out of the message."""
        assert expected == str(ConfigurationError("must be > 0", **kwargs))

    def test_pickles_with_its_path_and_source(self) -> None:
        """The path and source survive pickling."""
        exc = ConfigurationError("bad", path="a.b", source="f.toml")
        back = pickle.loads(pickle.dumps(exc))
        assert ("bad", "a.b", "f.toml", str(exc)) == (back.message, back.path, back.source,
                                                      str(back))


class TestPayoutDenied:
    def test_carries_the_decision_and_says_why(self) -> None:
        """The message names the amount, the codes and what could be paid instead."""
        decision = PayoutGuard(StaticFetcher({"BRL": "100.00"})).check("150", "BRL")
        exc = PayoutDenied(decision)
        assert decision is exc.decision
        assert "payout of 150.00 BRL denied (insufficient_funds); max payable now 100.00 BRL" == (
            str(exc)
        )

    def test_pickles_with_its_decision(self) -> None:
        """A denial raised in a worker process reaches the parent with its decision."""
        decision = PayoutGuard(StaticFetcher({"BRL": "100.00"})).check("150", "BRL")
        back = pickle.loads(pickle.dumps(PayoutDenied(decision)))
        assert (decision, str(PayoutDenied(decision))) == (back.decision, str(back))
