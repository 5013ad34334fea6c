"""Replay: every logged decision judged again on exactly the facts it was made on.

The traffic is a real guard's (routed over two providers, pinned payouts, reserves holding
funds, balances moving, the clock running so balances age and caches expire) logged through a
real ``JsonLinesDecisionLog``; the replay reads the file back.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from guard import (
    Decision,
    DecisionRecord,
    Mode,
    PayoutGuard,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    read_decisions,
    rules_fingerprint,
)
from guard._replay import Replayer, ReplaySummary, outcome, rejudgeable
from guard.testing import FailingFetcher, FakeClock, StaticFetcher
from rules import Facts, MaxBalanceAge, MaxPayout, RuleSet
from tests._replay_traffic import RULES, VARIED_RULES, traffic, varied_traffic


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Decision], Path]:
    path = tmp_path_factory.mktemp("replay") / "decisions.jsonl"
    return traffic(path, 10_000), path


class TestTheLog:
    def test_every_decision_is_in_the_log_once_in_order(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        made, path = logged
        records = list(read_decisions(path))
        assert [d.decision_id for d in made] == [r.decision.decision_id for r in records]
        assert made == [r.decision for r in records]

    def test_each_record_names_its_rules_and_operation(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        _, path = logged
        records = list(read_decisions(path))
        fingerprint = rules_fingerprint(PayoutGuard(StaticFetcher(), RULES).rules)
        assert {fingerprint} == {r.rules_fingerprint for r in records}
        assert {"check", "reserve"} == {r.operation for r in records}
        assert {None, "luxtak", "pagsmile"} == {r.provider_asked for r in records}

    def test_the_traffic_covers_what_replay_must_get_right(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        """Routed and pinned, allowed and denied for several reasons, holds counted."""
        made, _ = logged
        codes = Counter(code for d in made for code in d.codes)
        assert {"above_maximum_payout", "insufficient_funds", "stale_balance", "frozen_funds",
                "below_minimum_payout", "duplicate_payout"} <= set(codes)
        assert any(len(d.candidates) > 1 for d in made)
        assert any(d.reserved > 0 for d in made)
        assert any(d.balance_source == "cached" for d in made)
        assert sum(d.allowed for d in made) > 1000


class TestSameRules:
    def test_replaying_with_the_same_rules_reproduces_every_decision(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        _, path = logged
        replayer = Replayer(RULES)
        summary = ReplaySummary()
        rejudged = 0
        for replayed in replayer.replay_all(read_decisions(path)):
            summary.add(replayed)
            rejudged += replayed.rejudged
            assert outcome(replayed.before) == outcome(replayed.after), replayed.before.explain()
            assert replayed.before.explain().splitlines()[1:] == [
                line for line in replayed.after.explain().splitlines()[1:]
                if "(more)" not in line
            ] or len(replayed.before.candidates) > 1
        assert (10_000, 10_000) == (summary.total, summary.unchanged)
        assert rejudged > 9_000  # most decisions are the rules' own

    @pytest.mark.parametrize("error", [
        ProviderUnavailable("connection reset", provider="down", attempts=3),
        ProviderAuthError("invalid key", provider="down", status=401),
        ProviderRateLimited("slow down", provider="down", status=429, retry_after=2.5),
    ], ids=["unavailable", "credentials", "rate limited"])
    def test_a_provider_that_could_not_be_read_gives_its_reason_word_for_word(
        self, error: ProviderError
    ) -> None:
        """Too much for luxtak, unreadable elsewhere: replayed with every reason as it was."""
        clock = FakeClock()
        guard = PayoutGuard([StaticFetcher({"BRL": "100.00"}, name="luxtak", clock=clock),
                             FailingFetcher(error, name="down")], clock=clock)
        decision = guard.check("500.00", "BRL")
        assert ("insufficient_funds", "balance_unavailable") == decision.codes
        record = DecisionRecord.from_json(DecisionRecord(
            decision=decision, operation="check", rules_fingerprint=rules_fingerprint(guard.rules),
            version="0.1.0",
        ).to_json())
        replayed = Replayer([]).replay(record)
        assert (True, "unchanged") == (replayed.rejudged, replayed.change)
        assert decision.reasons == replayed.after.reasons

    def test_carried_decisions_are_the_ones_no_rule_made(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        made, _ = logged
        carried = [d for d in made if not rejudgeable(d)]
        assert carried
        assert all(
            "duplicate_payout" in d.codes or d.balance_age is None
            or any(c.lost for c in d.candidates)
            or any(r.rule == "guard" for r in d.reasons)
            for d in carried
        )


def _facts(decision: Decision) -> Facts:
    balance = decision.balance
    assert balance is not None
    assert decision.balance_age is not None
    return Facts(amount=decision.amount, currency=decision.currency, fee=decision.fee,
                 available=balance.available, frozen=balance.frozen, total=balance.total,
                 reserved=decision.reserved, age_seconds=decision.balance_age,
                 provider=decision.provider, account=decision.account,
                 own_in_flight=decision.own_in_flight)


class TestVariedTraffic:
    """Fees, accounts, three exponents, a provider down, scoped frozen funds, dry run."""

    @pytest.mark.parametrize("mode", ["enforce", "dry_run"])
    def test_the_same_rules_reproduce_every_decision_and_its_numbers(
        self, mode: Mode, tmp_path: Path
    ) -> None:
        path = tmp_path / "decisions.jsonl"
        made = varied_traffic(path, 700, seed=5, mode=mode)
        codes = Counter(code for decision in made for code in decision.codes)
        assert {"reserve_margin", "frozen_funds", "below_minimum_payout", "balance_unavailable",
                "above_maximum_payout", "min_remaining_balance", "stale_balance"} <= set(codes)
        assert any(d.fee for d in made)
        assert any(d.account for d in made)
        assert any(d.own_in_flight for d in made) == (mode == "enforce")
        rejudged = 0
        for replayed in Replayer(VARIED_RULES).replay_all(read_decisions(path)):
            before, after = replayed.before, replayed.after
            rejudged += replayed.rejudged
            assert outcome(before) == outcome(after), before.explain()
            assert (before.reasons, before.warnings, before.reserved, before.spendable,
                    before.reserve, before.holds, before.more_holds, before.own_in_flight) == (
                after.reasons, after.warnings, after.reserved, after.spendable,
                after.reserve, after.holds, after.more_holds, after.own_in_flight)
        assert rejudged > 550


class TestChangedRules:
    def test_a_lower_maximum_denies_exactly_the_larger_payouts_it_allowed(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        made, path = logged
        lower = [MaxPayout({"BRL": "500", "ARS": "50000"}), *RULES[1:]]
        summary = ReplaySummary()
        for replayed in Replayer(lower).replay_all(read_decisions(path)):
            summary.add(replayed)
        newly: dict[str, list[Any]] = {}
        for d in made:
            if d.allowed and rejudgeable(d) and d.currency == "BRL" and d.amount > 500:
                entry = newly.setdefault("BRL", [0, Decimal(0)])
                entry[0] += 1
                entry[1] += d.amount
        assert newly
        # Each of them is denied as above the maximum (some for other reasons too: a routed
        # payout names every candidate's), and nothing else changed verdict.
        assert newly == summary.allowed_to_denied["above_maximum_payout"]
        assert newly["BRL"][0] == summary.newly_denied
        assert {} == summary.denied_to_allowed

    def test_every_single_provider_decision_matches_the_rules_judging_its_facts(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        """The oracle: the rule engine itself, on the facts read back from the record."""
        _, path = logged
        looser = RuleSet([MaxPayout({"BRL": "1200", "ARS": "90000"}), MaxBalanceAge(90)])
        replayer = Replayer(looser)
        judged = 0
        for replayed in replayer.replay_all(read_decisions(path)):
            before = replayed.before
            if not replayed.rejudged or before.candidates:
                continue
            verdict = replayer.rules.evaluate(_facts(before))
            assert (not verdict.denies, sorted(v.code for v in verdict.denials())) == (
                replayed.after.allowed, sorted(replayed.after.codes)
            )
            judged += 1
        assert judged > 3_000

    def test_a_replay_reports_payouts_now_allowed(
        self, logged: tuple[list[Decision], Path]
    ) -> None:
        _, path = logged
        summary = ReplaySummary()
        for replayed in Replayer([MaxPayout({"BRL": "5000", "ARS": "90000"})]).replay_all(
            read_decisions(path)
        ):
            summary.add(replayed)
        assert summary.newly_allowed > 0
        assert summary.newly_allowed == sum(n for n, _ in summary.denied_to_allowed.values())
        assert summary.total == 10_000


class TestRecords:
    def test_a_record_round_trips_through_json_exactly(self) -> None:
        clock = FakeClock()
        guard = PayoutGuard(StaticFetcher({"CLP": "1000"}, clock=clock), clock=clock)
        clock.advance(2.5)
        decision = guard.check("10", "CLP")
        record = DecisionRecord(decision=decision, operation="check",
                                rules_fingerprint=rules_fingerprint(guard.rules),
                                version="0.1.0")
        assert record == DecisionRecord.from_json(record.to_json())
        assert decision.balance_age == DecisionRecord.from_json(
            record.to_json()
        ).decision.balance_age
