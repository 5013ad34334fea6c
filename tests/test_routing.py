"""One guard over several providers: each payout routed to a provider that can pay it, explained.

The providers are the three emulators over real sockets (Luxtak and Pagsmile hold BRL, LuxCore
ARS and MXN), read by the real fetchers; the property at the end uses ``StaticFetcher``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from guard import ConfigurationError, Decision, PayoutDenied, PayoutGuard, load_config
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy
from guard.stores import Hold, HoldOutcome, InMemoryReservations
from guard.testing import StaticFetcher
from guard.testing.emulators import Fault, LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator
from rules import MaxPayout, ReserveMargin, Rule, when
from tests._cli import emulator_env, parse_json, run_cli, write_config

FAST = RetryPolicy(attempts=2, deadline=3.0, backoff=0.001, max_backoff=0.002)
LUXTAK_LIMIT = when(MaxPayout({"BRL": "5000.00"}), provider="luxtak")


@dataclass
class Three:
    """The three emulators, running."""

    luxtak: LuxtakEmulator
    luxcore: LuxCoreEmulator
    pagsmile: PagsmileEmulator

    def fetchers(self) -> list[Any]:
        """Return a fresh fetcher for each, in the order luxtak, luxcore, pagsmile."""
        options: dict[str, Any] = {"retry": FAST, "timeout": (1.0, 1.0)}
        return [
            LuxtakFetcher(self.luxtak.app_id, self.luxtak.app_key, base_url=self.luxtak.url,
                          **options),
            LuxCoreFetcher(self.luxcore.api_key, base_url=self.luxcore.url, **options),
            PagsmileFetcher(self.pagsmile.app_id, self.pagsmile.security_key,
                            base_url=self.pagsmile.url, **options),
        ]

    def guard(self, rules: tuple[Rule, ...] = (LUXTAK_LIMIT,), **options: Any) -> PayoutGuard:
        """Return a guard over all three, fetching on every check unless told otherwise."""
        options.setdefault("cache_ttl", 0)
        return PayoutGuard(self.fetchers(), rules, **options)


@pytest.fixture
def three() -> Iterator[Three]:
    with LuxtakEmulator(balances={"BRL": "20000.00", "USD": "551.38"}) as luxtak, \
            LuxCoreEmulator(balances={"ARS": "12000.00", "MXN": "8500.00"}) as luxcore, \
            PagsmileEmulator(balances={"BRL": "70500.00"}) as pagsmile:
        yield Three(luxtak, luxcore, pagsmile)


def table(decision: Decision) -> list[tuple[str, bool, Decimal, tuple[str, ...]]]:
    """Return the candidates as plain tuples."""
    return [(c.provider, c.allowed, c.max_payable, c.codes) for c in decision.candidates]


class TestRouting:
    def test_priority_takes_the_first_provider_that_allows(self, three: Three) -> None:
        """Luxtak first; LuxCore holds no BRL, so it is no candidate; the best amount is shown."""
        with three.guard() as guard:
            decision = guard.check("1000.00", "BRL")
        assert (True, "luxtak", Decimal("70500.00")) == (
            decision.allowed, decision.provider, decision.max_payable)
        assert [("luxtak", True, Decimal("5000.00"), ()),
                ("pagsmile", True, Decimal("70500.00"), ())] == table(decision)

    def test_a_payout_over_one_providers_limit_goes_to_the_next(self, three: Three) -> None:
        """15,000 BRL: Luxtak's MaxPayout denies it, Pagsmile pays it; explain() says so."""
        with three.guard() as guard:
            decision = guard.check("15000.00", "BRL")
        assert (True, "pagsmile") == (decision.allowed, decision.provider)
        assert [("luxtak", False, Decimal("5000.00"), ("above_maximum_payout",)),
                ("pagsmile", True, Decimal("70500.00"), ())] == table(decision)
        text = decision.explain()
        assert "ALLOWED: payout 15000.00 BRL via pagsmile" in text
        assert "candidates (in the order tried):" in text
        assert any(line.split()[:2] == ["luxtak", "denied"] and "above_maximum_payout" in line
                   for line in text.splitlines())
        assert any(line.split()[:3] == ["->", "pagsmile", "allowed"]
                   for line in text.splitlines())

    def test_most_headroom_tries_the_largest_first(self, three: Three) -> None:
        """By headroom, Pagsmile (70,500) comes before Luxtak (5,000)."""
        with three.guard(routing="most_headroom") as guard:
            decision = guard.check("1000.00", "BRL")
        assert "pagsmile" == decision.provider
        assert ["pagsmile", "luxtak"] == [c.provider for c in decision.candidates]

    def test_a_provider_that_is_down_is_skipped_and_listed(self, three: Three) -> None:
        """Luxtak fails: the payout goes through Pagsmile; Luxtak's row says why."""
        three.luxtak.fail_next(Fault.HTTP_503, times=10)
        with three.guard() as guard:
            decision = guard.check("1000.00", "BRL")
        assert (True, "pagsmile") == (decision.allowed, decision.provider)
        assert [("luxtak", False, Decimal("0.00"), ("balance_unavailable",)),
                ("pagsmile", True, Decimal("70500.00"), ())] == table(decision)

    def test_every_candidate_denying_gives_every_reason_and_the_best_amount(
        self, three: Three
    ) -> None:
        """Too much for both: the union of their reasons, the largest max payable of them."""
        with three.guard() as guard:
            decision = guard.check("80000.00", "BRL")
        assert (False, "luxtak", Decimal("70500.00")) == (
            decision.allowed, decision.provider, decision.max_payable)
        assert {"insufficient_funds", "above_maximum_payout"} == set(decision.codes)
        assert [("luxtak", False, Decimal("5000.00"),
                 ("insufficient_funds", "above_maximum_payout")),
                ("pagsmile", False, Decimal("70500.00"), ("insufficient_funds",))] == [
            (p, a, m, tuple(sorted(c, key=decision.codes.index))) for p, a, m, c in table(decision)]

    def test_a_currency_no_provider_holds_says_so_for_each(self, three: Three) -> None:
        """No provider reports JPY: denied, each provider's currency_not_held listed."""
        with three.guard() as guard:
            decision = guard.check("100", "JPY")
        assert (False, {"currency_not_held"}) == (decision.allowed, set(decision.codes))
        assert 3 == len(decision.reasons)

    def test_pinning_judges_one_provider_only(self, three: Three) -> None:
        """provider= judges there alone: no candidates, no routing around a denial."""
        with three.guard() as guard:
            pinned = guard.check("15000.00", "BRL", provider="luxtak")
            ars = guard.check("100.00", "ARS", provider="luxcore")
            with pytest.raises(ConfigurationError, match="did you mean 'luxcore'"):
                guard.check("1.00", "ARS", provider="luxcroe")
        assert (False, "luxtak", ()) == (pinned.allowed, pinned.provider, pinned.candidates)
        assert (True, "luxcore") == (ars.allowed, ars.provider)

    def test_a_currency_route_limits_the_candidates(self, three: Three) -> None:
        """routes={"BRL": ["pagsmile"]}: BRL is judged at Pagsmile alone."""
        with three.guard(routes={"BRL": ["pagsmile"]}) as guard:
            decision = guard.check("100.00", "BRL")
            ars = guard.check("100.00", "ARS")
        assert ("pagsmile", ()) == (decision.provider, decision.candidates)
        assert ("luxcore", True) == (ars.provider, ars.allowed)

    def test_max_payable_is_the_best_one_provider_and_by_provider(self, three: Three) -> None:
        """max_payable routes to the best single provider; by_provider maps each candidate."""
        with three.guard() as guard:
            best = guard.max_payable("BRL")
            each = guard.max_payable("BRL", by_provider=True)
            pinned = guard.max_payable("BRL", provider="luxtak")
        assert Decimal("70500.00") == best
        assert {"luxtak": Decimal("5000.00"), "luxcore": Decimal("0.00"),
                "pagsmile": Decimal("70500.00")} == each
        assert Decimal("5000.00") == pinned

    def test_the_decision_log_event_carries_the_candidates(self, three: Three) -> None:
        """payout_guard.decision lists each candidate with its verdict and amount."""
        with three.guard() as guard, capture_logs() as logs:
            guard.check("15000.00", "BRL")
        event = next(log for log in logs if log["event"] == "payout_guard.decision")
        shown = ("provider", "allowed", "max_payable", "codes", "held")
        assert [{"provider": "luxtak", "allowed": False, "max_payable": "5000.00",
                 "codes": ["above_maximum_payout"], "held": "0.00"},
                {"provider": "pagsmile", "allowed": True, "max_payable": "70500.00",
                 "codes": [], "held": "0.00"}] == [
            {key: c[key] for key in shown} for c in event["candidates"]
        ]
        # Each candidate carries the balance it was judged on: what replay judges again.
        assert ["20000.00", "70500.00"] == [
            c["balance"]["available"] for c in event["candidates"]
        ]

    def test_a_routed_decision_round_trips_through_json(self, three: Three) -> None:
        """Candidates survive JSON exactly."""
        with three.guard() as guard:
            decision = guard.check("15000.00", "BRL")
        assert decision == Decision.model_validate_json(decision.model_dump_json())

    def test_a_guard_of_one_provider_lists_no_candidates(self, three: Three) -> None:
        """One fetcher: the decision is as it always was; guard.provider is that provider."""
        fetcher = three.fetchers()[0]
        with PayoutGuard(fetcher, cache_ttl=0) as guard:
            decision = guard.check("100.00", "BRL")
        assert (("luxtak",), "luxtak", ()) == (guard.providers, guard.provider,
                                                decision.candidates)


class TestHolds:
    def test_reserve_holds_at_the_chosen_provider(self, three: Three) -> None:
        """The hold is keyed at Pagsmile, where the payout was routed."""
        with three.guard() as guard:
            reservation = guard.reserve("15000.00", "BRL", payout_id="po-1")
            hold = guard.hold("po-1")
            after = guard.check("1000.00", "BRL", provider="pagsmile")
        assert "pagsmile" == reservation.decision.provider
        assert hold is not None
        assert hold.key.startswith("pagsmile|")
        assert Decimal("15000.00") == after.reserved

    def test_a_payout_id_is_unique_across_providers(self, three: Three) -> None:
        """An id held at Pagsmile is a duplicate at Luxtak, and the reason names Pagsmile."""
        with three.guard() as guard:
            guard.reserve("100.00", "BRL", payout_id="po-7", provider="pagsmile")
            with pytest.raises(PayoutDenied) as routed:
                guard.reserve("100.00", "BRL", payout_id="po-7")
            with pytest.raises(PayoutDenied) as pinned:
                guard.reserve("100.00", "BRL", payout_id="po-7", provider="luxtak")
            checked = guard.check("100.00", "BRL", payout_id="po-7")
        for decision in (routed.value.decision, pinned.value.decision, checked):
            assert ("duplicate_payout",) == decision.codes
            assert "through pagsmile" in decision.reasons[0].message
            assert "pagsmile" == decision.reasons[0].details["provider"]

    def test_concurrent_reserves_spill_to_the_next_provider_without_overspend(
        self, three: Three
    ) -> None:
        """32 threads reserving 1,000 BRL each: 10 fit at Luxtak, 10 at Pagsmile, no more."""
        three.luxtak.set_balance("BRL", "10000.00")
        three.pagsmile.set_balance("BRL", "10000.00")
        store = InMemoryReservations()
        barrier = threading.Barrier(32)
        decisions: list[Decision] = []
        lock = threading.Lock()
        with three.guard((), cache_ttl=60, reservations=store) as guard:

            def pay(n: int) -> None:
                barrier.wait()
                try:
                    decision = guard.reserve("1000.00", "BRL", payout_id=f"po-{n}").decision
                except PayoutDenied as denied:
                    decision = denied.decision
                with lock:
                    decisions.append(decision)

            threads = [threading.Thread(target=pay, args=(n,)) for n in range(32)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            # A payout that lost every race may be retried; the room is then exactly used up.
            for decision in [d for d in decisions if not d.allowed]:
                assert {"insufficient_funds"} == set(decision.codes)
                with contextlib.suppress(PayoutDenied):  # the holds are counted in the store
                    guard.reserve("1000.00", "BRL", payout_id=f"{decision.payout_id}-again")
            now = time.time()
            held = {name: store.reserved(f"{name}||BRL", counted_since=0.0, now=now)
                    for name in ("luxtak", "pagsmile")}
        assert {"luxtak": Decimal("10000.00"), "pagsmile": Decimal("10000.00")} == held
        first = [d.provider for d in decisions if d.allowed]
        assert {"luxtak", "pagsmile"} == set(first)


class TestConstruction:
    def test_fetcher_names_must_be_unique(self) -> None:
        """Two fetchers named alike cannot be told apart: ConfigurationError."""
        with pytest.raises(ConfigurationError, match="two fetchers are named 'static'"):
            PayoutGuard([StaticFetcher({"BRL": "1"}), StaticFetcher({"BRL": "2"})])

    @pytest.mark.parametrize(("options", "match"), [
        ({"routing": "cheapest"}, "'priority' or 'most_headroom'"),
        ({"routes": {"BRL": ["nope"]}}, "no provider named 'nope'"),
        ({"routes": {"BRL": []}}, "non-empty list"),
        ({"routes": {"XXX": ["a"]}}, "currency"),
        ({"routes": {"BRL": ["a", "a"]}}, "twice"),
    ])
    def test_routing_options_are_checked(self, options: dict[str, Any], match: str) -> None:
        """A bad policy or route is a ConfigurationError, never a TypeError."""
        with pytest.raises(ConfigurationError, match=match):
            PayoutGuard([StaticFetcher({"BRL": "1"}, name="a"),
                         StaticFetcher({"BRL": "1"}, name="b")], **options)

    def test_providers_and_repr(self) -> None:
        """guard.providers lists the names in order; repr shows them."""
        guard = PayoutGuard([StaticFetcher({"BRL": "1"}, name="a"),
                             StaticFetcher({"BRL": "1"}, name="b")])
        assert (("a", "b"), "a") == (guard.providers, guard.provider)
        assert "providers=['a', 'b']" in repr(guard)


def _config(three: Three, **extra: Any) -> tuple[dict[str, Any], dict[str, str]]:
    data: dict[str, Any] = {
        "providers": {
            "luxtak": {"base_url": three.luxtak.url, "app_id_env": "LT_ID",
                       "app_key_env": "LT_KEY"},
            "luxcore_ar": {"kind": "luxcore", "base_url": three.luxcore.url,
                           "api_key_env": "LC_KEY"},
            "pagsmile": {"base_url": three.pagsmile.url, "app_id_env": "PS_ID",
                         "security_key_env": "PS_KEY"},
        },
        "cache": {"ttl": 0},
        **extra,
    }
    env = {"LT_ID": three.luxtak.app_id, "LT_KEY": three.luxtak.app_key,
           "LC_KEY": three.luxcore.api_key, "PS_ID": three.pagsmile.app_id,
           "PS_KEY": three.pagsmile.security_key}
    return data, env


class TestConfig:
    def test_from_config_builds_every_provider_and_routes(self, three: Three) -> None:
        """Without provider=, the guard is over all three, default_provider first."""
        data, env = _config(three, default_provider="pagsmile",
                            rules=[{"type": "max_payout", "provider": "luxtak",
                                    "limits": {"BRL": "5000.00"}}])
        with PayoutGuard.from_config(data, env=env) as guard:
            decision = guard.check("15000.00", "BRL")
        assert ("pagsmile", "luxtak", "luxcore_ar") == guard.providers
        assert (True, "pagsmile") == (decision.allowed, decision.provider)

    def test_a_name_pins_one_and_a_list_a_subset(self, three: Three) -> None:
        """provider="luxtak" builds one; a list builds those, in its order."""
        data, env = _config(three)
        with PayoutGuard.from_config(data, provider="luxtak", env=env) as one, \
                PayoutGuard.from_config(data, provider=["pagsmile", "luxtak"], env=env) as two:
            assert (("luxtak",), ("pagsmile", "luxtak")) == (one.providers, two.providers)

    @pytest.mark.parametrize(("provider", "match"), [
        (["luxtak", 3], "provider names must be strings"),
        (7, "got int"),
        ([], "non-empty list"),
        (["luxtak", "luxtak"], "twice"),
        (["luxcore"], "no provider named 'luxcore'.*did you mean 'luxcore_ar'"),
    ])
    def test_a_wrong_provider_argument_is_a_configuration_error(
        self, three: Three, provider: object, match: str
    ) -> None:
        """Never a TypeError: a list with a number, a number, a name that is not configured."""
        data, env = _config(three)
        with pytest.raises(ConfigurationError, match=match):
            PayoutGuard.from_config(data, provider=provider, env=env)  # type: ignore[arg-type]  # wrong on purpose

    def test_a_routing_table_from_the_file(self, three: Three) -> None:
        """[routing] policy and a per-currency route reach the guard."""
        data, env = _config(three, routing={"policy": "most_headroom",
                                            "BRL": ["luxtak", "pagsmile"]})
        with PayoutGuard.from_config(data, env=env) as guard:
            decision = guard.check("10.00", "BRL")
        assert ("most_headroom", {"BRL": ("luxtak", "pagsmile")}) == (
            guard.routing, guard.routes)
        assert "pagsmile" == decision.provider

    @pytest.mark.parametrize(("routing", "path", "match"), [
        ({"BRL": ["luxtk"]}, "routing.BRL", "'luxtk', which is not configured.*'luxtak'"),
        ({"policy": "random"}, "routing.policy", "priority"),
        ({"brl": ["luxtak"]}, "routing", "unknown key 'brl'"),
        ({"BRL": []}, "routing", "non-empty list"),
    ])
    def test_a_bad_routing_table_is_refused(self, three: Three, routing: dict[str, Any],
                                            path: str, match: str) -> None:
        """Unknown providers, policies and keys name the place."""
        data, _ = _config(three, routing=routing)
        with pytest.raises(ConfigurationError, match=match) as error:
            load_config(data)
        assert (error.value.path or "").startswith(path)

    @pytest.mark.parametrize("scope", ["luxcore", "luxcroe_ar"])
    def test_a_rule_scoped_to_an_unconfigured_provider_is_refused(
        self, three: Three, scope: str
    ) -> None:
        """It would never apply: the error names the rule, the name, the configured ones."""
        data, _ = _config(three, rules=[
            {"type": "reserve_margin", "percent": "5"},
            {"type": "max_payout", "provider": scope, "limits": {"ARS": "1000.00"}},
        ])
        with pytest.raises(ConfigurationError) as error:
            load_config(data)
        assert "rules[1].provider" == error.value.path
        assert f"{scope!r}, which is not configured" in error.value.message
        assert "luxtak, luxcore_ar, pagsmile" in error.value.message
        assert "did you mean 'luxcore_ar'?" in error.value.message

    def test_a_nested_scope_is_checked_too(self, three: Three) -> None:
        """Inside any_of, the path leads to the scoped member."""
        data, _ = _config(three, rules=[{"type": "any_of", "rules": [
            {"type": "reserve_margin", "percent": "5"},
            {"type": "max_payout", "provider": "nobody", "limits": {"ARS": "1"}},
        ]}])
        with pytest.raises(ConfigurationError) as error:
            load_config(data)
        assert "rules[0].rules[1].provider" == error.value.path


class TestCli:
    def test_check_routes_and_shows_the_candidates(self, three: Three, tmp_path: Path) -> None:
        """The check command routes without --provider; text and --json show the candidates."""
        rules = ('[[rules]]\ntype = "max_payout"\nprovider = "luxtak"\n'
                 'limits = { BRL = "5000.00" }\n')
        path = write_config(tmp_path / "g.toml", luxtak=three.luxtak, luxcore=three.luxcore,
                            pagsmile=three.pagsmile, rules=rules)
        env = emulator_env(three.luxtak, three.luxcore, three.pagsmile)
        text = run_cli("check", "15000", "BRL", "-c", str(path), env=env)
        as_json = run_cli("check", "15000", "BRL", "-c", str(path), "--json", env=env)
        pinned = run_cli("check", "15000", "BRL", "-c", str(path), "-p", "luxtak", env=env)
        assert 0 == text.returncode, text.stderr
        assert "via pagsmile" in text.stdout
        assert "candidates (in the order tried):" in text.stdout
        document = parse_json(as_json.stdout)
        assert ("pagsmile", ["luxtak", "pagsmile"]) == (
            document["provider"], [c["provider"] for c in document["candidates"]])
        assert 1 == pinned.returncode
        assert "above_maximum_payout" in pinned.stdout
        assert "candidates" not in pinned.stdout

    def test_check_exits_3_only_when_no_candidate_could_be_read(
        self, three: Three, tmp_path: Path
    ) -> None:
        """One provider down and the other paying: 0; both down: 3."""
        path = write_config(tmp_path / "g.toml", luxtak=three.luxtak, pagsmile=three.pagsmile)
        env = emulator_env(three.luxtak, pagsmile=three.pagsmile)
        three.luxtak.fail_next(Fault.HTTP_503, times=5)
        one_down = run_cli("check", "100", "BRL", "-c", str(path), env=env)
        three.luxtak.fail_next(Fault.HTTP_503, times=5)
        three.pagsmile.fail_next(Fault.HTTP_503, times=5)
        both_down = run_cli("check", "100", "BRL", "-c", str(path), env=env)
        assert (0, 3) == (one_down.returncode, both_down.returncode), one_down.stderr

    def test_balances_shows_every_provider_even_one_that_cannot_be_built(
        self, three: Three, tmp_path: Path
    ) -> None:
        """A missing variable and an outage each get their row; the others are read; exit 3."""
        path = write_config(tmp_path / "g.toml", luxtak=three.luxtak, luxcore=three.luxcore,
                            pagsmile=three.pagsmile)
        env = emulator_env(three.luxtak, three.luxcore)  # Pagsmile's variables are not set
        three.luxcore.fail_next(Fault.HTTP_503, times=5)
        result = run_cli("balances", "-c", str(path), "--json", env=env)
        document = parse_json(result.stdout)
        assert 3 == result.returncode, result.stderr
        providers = document["providers"]
        assert "20000.00" == providers["luxtak"]["balances"][0]["available"]
        assert "HTTP 503" in providers["luxcore"]["error"]
        assert "TEST_PAGSMILE_APP_ID is not set" in providers["pagsmile"]["error"]

    def test_simulate_routes_rows_without_a_provider(self, three: Three,
                                                     tmp_path: Path) -> None:
        """A routed batch row is paid by the chosen provider, as the report says."""
        rules = ('[[rules]]\ntype = "max_payout"\nprovider = "luxtak"\n'
                 'limits = { BRL = "5000.00" }\n')
        path = write_config(tmp_path / "g.toml", luxtak=three.luxtak, pagsmile=three.pagsmile,
                            rules=rules)
        batch = tmp_path / "payouts.csv"
        batch.write_text("amount,currency,payout_id\n1000,BRL,a\n15000,BRL,b\n",
                         encoding="utf-8")
        report = tmp_path / "report.json"
        result = run_cli("simulate", str(batch), "-c", str(path), "--report", str(report),
                         env=emulator_env(three.luxtak, pagsmile=three.pagsmile))
        assert 0 == result.returncode, result.stderr
        rows = parse_json(report.read_text(encoding="utf-8"))["payouts"]
        assert [("luxtak", "allowed"), ("pagsmile", "allowed")] == [
            (row["provider"], row["status"]) for row in rows]
        assert rows[1]["candidates"].startswith("luxtak:denied:5000.00;pagsmile:allowed")


# -- the property ----------------------------------------------------------------------------

NAMES = ("a", "b", "c")
amounts = st.integers(min_value=0, max_value=5000).map(lambda n: Decimal(n) / 100)


@st.composite
def providers(draw: st.DrawFn) -> dict[str, dict[str, Decimal]]:
    """Return provider -> currency -> available (a provider may hold no BRL)."""
    made: dict[str, dict[str, Decimal]] = {}
    for name in NAMES:
        held = {"BRL": draw(amounts)} if draw(st.booleans()) or name == "a" else {}
        made[name] = {**held, "ARS": Decimal("1.00")}
    return made


@given(balances=providers(), amount=st.integers(min_value=1, max_value=6000),
       limits=st.lists(st.integers(min_value=1, max_value=60), min_size=3, max_size=3),
       policy=st.sampled_from(["priority", "most_headroom"]))
def test_routed_allows_exactly_when_some_pinned_allows(
    balances: dict[str, dict[str, Decimal]], amount: int, limits: list[int], policy: str
) -> None:
    """Routed: allowed iff a provider pinned alone allows; max_payable the largest pinned one."""
    rules: list[Rule] = [ReserveMargin(percent="5")]
    rules += [when(MaxPayout({"BRL": Decimal(limit)}), provider=name)
              for name, limit in zip(NAMES, limits, strict=True)]
    guard = PayoutGuard([StaticFetcher(balances[name], name=name) for name in NAMES], rules,
                        routing=policy)  # type: ignore[arg-type]  # drawn from the two policies
    value = Decimal(amount) / 100
    routed = guard.check(value, "BRL")
    pinned = {name: guard.check(value, "BRL", provider=name) for name in NAMES}
    assert routed.allowed == any(d.allowed for d in pinned.values())
    assert routed.max_payable == max(d.max_payable for d in pinned.values())
    assert guard.max_payable("BRL") == max(
        guard.max_payable("BRL", provider=name) for name in NAMES)
    if routed.allowed:
        assert pinned[routed.provider].allowed


def test_protect_pins_each_call_to_the_provider_it_names() -> None:
    """protect(provider=...) reads the provider from the call; None routes."""
    guard = PayoutGuard([StaticFetcher({"BRL": "100.00"}, name="a"),
                         StaticFetcher({"BRL": "900.00"}, name="b")])
    sent: list[str] = []

    @guard.protect(amount="amount", currency="currency", payout_id="ref", provider="via")
    def pay(amount: str, currency: str, ref: str, via: str | None = None) -> None:
        sent.append(f"{ref}: {amount} {currency} via {via}")

    pay("500.00", "BRL", "po-1")  # routed: "a" cannot, "b" can
    with pytest.raises(PayoutDenied) as denied:
        pay("500.00", "BRL", "po-2", via="a")
    assert ["po-1: 500.00 BRL via None"] == sent
    assert ("a", ()) == (denied.value.decision.provider, denied.value.decision.candidates)
    held = guard.hold("po-1")
    assert held is not None
    assert held.key.startswith("b|")


class _AlwaysTaken(InMemoryReservations):
    """A store in which concurrent payouts always took the room first."""

    def __init__(self) -> None:
        super().__init__()
        self.tried: list[str] = []

    def try_hold(
        self,
        hold: Hold,
        *,
        ceiling: Decimal,  # noqa: ARG002 - the store's signature
        counted_since: float,  # noqa: ARG002 - the store's signature
        now: float,  # noqa: ARG002 - the store's signature
    ) -> HoldOutcome:
        self.tried.append(hold.key.split("|")[0])
        return HoldOutcome(status="over_ceiling", hold=None, counted=Decimal(0))


def test_reserve_tries_each_allowing_candidate_then_gives_up_bounded() -> None:
    """Room taken at every candidate: each is tried in order, a bounded number of rounds."""
    store = _AlwaysTaken()
    guard = PayoutGuard([StaticFetcher({"BRL": "100.00"}, name="a"),
                         StaticFetcher({"BRL": "100.00"}, name="b")], reservations=store)
    with pytest.raises(PayoutDenied) as denied:
        guard.reserve("10.00", "BRL", payout_id="po-1")
    decision = denied.value.decision
    assert ["a", "b"] * 5 == store.tried
    assert ("insufficient_funds",) == decision.codes
    assert "concurrent payouts kept claiming" in decision.reasons[0].message
    assert [("a", False, ("insufficient_funds",)), ("b", False, ("insufficient_funds",))] == [
        (c.provider, c.allowed, c.codes) for c in decision.candidates]
