"""guard.testing: StaticFetcher, FailingFetcher, capture_decisions and the pytest plugin."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from guard import ConfigurationError, PayoutGuard, ProviderUnavailable
from guard.fetchers import BalanceFetcher
from guard.testing import FailingFetcher, StaticFetcher, capture_decisions
from tests._guard_strategies import START, FakeClock

pytest_plugins = ["pytester"]

AS_OF = datetime.fromtimestamp(START, UTC)


class TestStaticFetcher:
    def test_serves_the_balances_it_was_given(self) -> None:
        """Amounts at the currency exponent, as_of from its clock, its own provider name."""
        fetcher = StaticFetcher({"BRL": "1000", "kwd": 5}, name="luxcore", clock=FakeClock())
        snaps = {s.currency: s for s in fetcher.fetch()}
        assert ("1000.00", "5.000", "luxcore", AS_OF) == (
            str(snaps["BRL"].available), str(snaps["KWD"].available), snaps["BRL"].provider,
            snaps["BRL"].as_of,
        )

    def test_filters_by_currency_and_records_calls(self) -> None:
        """fetch(currency) answers that currency only; calls and requested are recorded."""
        fetcher = StaticFetcher({"BRL": "1", "ARS": "2"})
        assert ["ARS"] == [s.currency for s in fetcher.fetch("ARS")]
        assert [] == fetcher.fetch("CLP")
        assert (2, ["ARS", "CLP"]) == (fetcher.calls, fetcher.requested)

    def test_a_mapping_sets_frozen_total_and_as_of(self) -> None:
        """The long form gives every field a provider may report."""
        fetcher = StaticFetcher({"ARS": {"available": "5", "frozen": "1", "total": "6",
                                         "as_of": AS_OF}})
        (snap,) = fetcher.fetch("ARS")
        assert ("5.00", "1.00", "6.00", AS_OF) == (
            str(snap.available), str(snap.frozen), str(snap.total), snap.as_of
        )

    def test_set_and_remove_change_what_is_served(self) -> None:
        """A test can move the balance, or make the provider stop holding a currency."""
        fetcher = StaticFetcher({"BRL": "1"})
        fetcher.set("brl", Decimal("7.5"), frozen="0.5")
        assert [(Decimal("7.50"), Decimal("0.50"))] == [
            (s.available, s.frozen) for s in fetcher.fetch("BRL")
        ]
        fetcher.remove("BRL")
        assert [] == fetcher.fetch()

    @pytest.mark.parametrize(
        ("balances", "path"),
        [
            ({"BRL": 10.5}, "BRL.available"),
            ({"BRL": "1.001"}, "BRL.available"),
            ({"BRL": {"available": "1", "frozen": 0.5}}, "BRL.frozen"),
            ({"BRL": {"frozen": "1"}}, "BRL"),
            ({"BRL": {"available": "1", "pending": "1"}}, "BRL"),
            ({"BRL": {"available": "1", "as_of": "2024-01-01"}}, "BRL.as_of"),
            ({"BRL": {"available": "1", "as_of": datetime(2024, 1, 1)}}, "BRL.as_of"),  # noqa: DTZ001 - naive on purpose
            ({"VEF": "1"}, "VEF"),
        ],
    )
    def test_bad_balances_are_configuration_errors(
        self, balances: dict[str, object], path: str
    ) -> None:
        """Floats, inexact amounts, unknown keys, naive times, unknown currencies fail early."""
        with pytest.raises(ConfigurationError) as info:
            StaticFetcher(balances)  # type: ignore[arg-type]  # bad values on purpose
        assert path == info.value.path

    def test_follows_the_fetcher_protocol(self) -> None:
        """It can stand wherever a provider fetcher does."""
        assert isinstance(StaticFetcher(), BalanceFetcher)
        assert "StaticFetcher(name='static', currencies=['ARS', 'BRL'])" == repr(
            StaticFetcher({"BRL": "1", "ARS": "1"})
        )


class TestFailingFetcher:
    def test_by_default_the_provider_is_unavailable(self) -> None:
        """A ProviderUnavailable naming the fetcher's provider; calls are counted."""
        fetcher = FailingFetcher(name="luxcore")
        with pytest.raises(ProviderUnavailable) as info:
            fetcher.fetch("BRL")
        assert ("luxcore", 1) == (info.value.provider, fetcher.calls)

    def test_raises_the_exception_it_was_given(self) -> None:
        """An instance is raised as is."""
        error = RuntimeError("boom")
        with pytest.raises(RuntimeError) as info:
            FailingFetcher(error).fetch()
        assert error is info.value

    def test_a_plain_exception_class_is_instantiated(self) -> None:
        """An exception class without required arguments is raised as an instance."""
        with pytest.raises(TimeoutError):
            FailingFetcher(TimeoutError).fetch()

    def test_a_provider_error_class_is_instantiated(self) -> None:
        """FailingFetcher(ProviderUnavailable) simulates that error from its provider."""
        guard = PayoutGuard(FailingFetcher(ProviderUnavailable, name="luxcore"))
        assert "ProviderUnavailable" in guard.check("1", "BRL").reasons[0].message

    def test_follows_the_fetcher_protocol(self) -> None:
        """It can stand wherever a provider fetcher does."""
        assert isinstance(FailingFetcher(), BalanceFetcher)


class TestCaptureDecisions:
    def test_captures_each_decision_made_inside_the_block(self) -> None:
        """Decisions of check and reserve, in order; none after the block."""
        guard = PayoutGuard(StaticFetcher({"BRL": "10.00"}))
        with capture_decisions() as decisions:
            first = guard.check("1", "BRL")
            second = guard.reserve("2", "BRL", payout_id="po_1").decision
        guard.check("3", "BRL")
        assert [first, second] == decisions

    def test_captures_decisions_from_other_threads(self) -> None:
        """Decisions made by worker threads reach the capture too."""
        guard = PayoutGuard(StaticFetcher({"BRL": "10.00"}))
        with capture_decisions() as decisions:
            threads = [threading.Thread(target=guard.check, args=("1", "BRL"))
                       for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
        assert 4 == len(decisions)

    def test_nested_captures_each_see_their_decisions(self) -> None:
        """An inner capture sees its block; the outer sees both."""
        guard = PayoutGuard(StaticFetcher({"BRL": "10.00"}))
        with capture_decisions() as outer:
            guard.check("1", "BRL")
            with capture_decisions() as inner:
                guard.check("2", "BRL")
        assert (["1.00", "2.00"], ["2.00"]) == (
            [str(d.amount) for d in outer], [str(d.amount) for d in inner]
        )


PLUGIN_TESTS = '''
from decimal import Decimal

import pytest
from rules import MaxPayout


def test_default_balances(payout_guard_fetcher, payout_guard_balances):
    assert {"BRL", "ARS", "MXN"} == {s.currency for s in payout_guard_fetcher.fetch()}
    assert "10000.00" == payout_guard_balances["BRL"]


def test_dry_run_guard_judges_and_never_blocks(payout_guard_dry_run, payout_guard_decisions):
    calls = []

    @payout_guard_dry_run.protect()
    def pay(amount, currency):
        calls.append(amount)

    pay("20000", "BRL")
    pay("10", "BRL")
    assert ["20000", "10"] == calls
    assert [False, True] == [d.allowed for d in payout_guard_decisions]
    assert ["dry_run", "dry_run"] == [d.mode for d in payout_guard_decisions]


class TestOverride:
    @pytest.fixture
    def payout_guard_balances(self):
        return {"CLP": "90000"}

    @pytest.fixture
    def payout_guard_rules(self):
        return [MaxPayout({"CLP": "5000"})]

    def test_overridden_balances_and_rules_apply(self, payout_guard_dry_run):
        assert Decimal("5000") == payout_guard_dry_run.max_payable("CLP")
        assert ("above_maximum_payout",) == payout_guard_dry_run.check("6000", "CLP").codes


def test_decisions_are_per_test(payout_guard_decisions):
    assert [] == payout_guard_decisions
'''


class TestPytestPlugin:
    def test_the_fixtures_work_in_a_users_test_suite(self, pytester: pytest.Pytester) -> None:
        """The installed plugin's fixtures: balances, rules, fetcher, dry-run guard, decisions."""
        pytester.makepyfile(test_user_payouts=PLUGIN_TESTS)
        result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
        result.assert_outcomes(passed=4)

    def test_the_plugin_is_registered_as_an_entry_point(self) -> None:
        """Installing payout-guard is enough: pytest finds the plugin by its entry point."""
        from importlib.metadata import entry_points

        found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
        assert "guard.testing.pytest_plugin" == found.get("payout_guard")
