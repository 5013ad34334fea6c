"""BalanceSnapshot, Reason and Decision: frozen values, exact JSON, explain()."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, localcontext

import pytest
from pydantic import ValidationError

from guard import BalanceSnapshot, Decision, PayoutDenied, PayoutGuard, Reason
from guard.testing import FailingFetcher, StaticFetcher
from rules import FrozenFunds, MaxPayout, ReserveMargin, Rule
from tests._guard_strategies import START, FakeClock

AS_OF = datetime.fromtimestamp(START, UTC)


def make_guard(
    balances: dict[str, object], rules: list[Rule] | None = None, **options: object
) -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(
        StaticFetcher(balances, clock=clock), rules or [], clock=clock, **options  # type: ignore[arg-type]  # options are the guard's keyword options
    )


def snapshot(**fields: object) -> BalanceSnapshot:
    values: dict[str, object] = {"provider": "luxcore", "currency": "BRL",
                                 "available": "1000.00", "as_of": AS_OF}
    values.update(fields)
    return BalanceSnapshot.model_validate(values)


class TestBalanceSnapshot:
    def test_amounts_are_written_at_the_currency_exponent(self) -> None:
        """'10' KWD becomes 10.000; a lower-case currency is upper-cased."""
        snap = snapshot(currency="kwd", available="10", frozen=Decimal(2), total="12.5")
        assert ("KWD", "10.000", "2.000", "12.500") == (
            snap.currency, str(snap.available), str(snap.frozen), str(snap.total)
        )

    def test_is_frozen(self) -> None:
        """A snapshot cannot be changed after it is made."""
        snap = snapshot()
        with pytest.raises(ValidationError):
            snap.available = Decimal("1.00")

    @pytest.mark.parametrize(
        "fields",
        [
            {"available": "-0.01"},
            {"available": "10.001"},
            {"frozen": "-1"},
            {"available": "NaN"},
            {"currency": "VEF"},
            {"currency": "XAU"},
            {"as_of": datetime(2024, 1, 1, 12, 0)},  # noqa: DTZ001 - naive on purpose
            {"unknown": "x"},
        ],
    )
    def test_refuses_what_it_cannot_trust(self, fields: dict[str, object]) -> None:
        """Negative, inexact, NaN amounts, unknown currencies, naive times, extra fields fail."""
        with pytest.raises(ValidationError):
            snapshot(**fields)

    def test_refuses_float_amounts(self) -> None:
        """A float balance is refused like a float payout amount: money is never float."""
        with pytest.raises(ValidationError, match="float"):
            snapshot(available=1000.1)

    def test_as_of_is_stored_in_utc(self) -> None:
        """An as_of in another zone is converted to UTC, the same instant."""
        local = datetime(2024, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=-3)))
        snap = snapshot(as_of=local)
        assert datetime(2024, 1, 1, 12, 0, tzinfo=UTC) == snap.as_of
        assert UTC == snap.as_of.tzinfo

    def test_json_round_trips_exactly(self) -> None:
        """Amounts travel as strings and come back equal, at the same exponent."""
        snap = snapshot(currency="KWD", available="10.000", frozen="0.500")
        text = snap.model_dump_json()
        back = BalanceSnapshot.model_validate_json(text)
        assert snap == back
        assert ("10.000", "0.500") == (str(back.available), str(back.frozen))
        assert "10.000" == json.loads(text)["available"]


class TestReason:
    def test_is_frozen_with_defaults(self) -> None:
        """A reason defaults to not retryable with no details, and cannot be changed."""
        reason = Reason(code="x", message="m", rule="guard")
        assert (False, {}) == (reason.retryable, reason.details)
        with pytest.raises(ValidationError):
            reason.code = "y"


class TestDecisionJson:
    def test_a_denial_round_trips_exactly(self) -> None:
        """A denial with reasons, details and holds comes back equal from its JSON."""
        guard = make_guard({"BRL": "1000.00"}, [ReserveMargin(percent="10")])
        guard.reserve("300", "BRL", payout_id="po_1")
        decision = guard.check("650.10", "BRL", fee="1.5", payout_id="po_2")
        assert not decision.allowed
        back = Decision.model_validate_json(decision.model_dump_json())
        assert decision == back
        assert decision.model_dump_json() == back.model_dump_json()

    @pytest.mark.parametrize(
        ("currency", "balance", "amount"),
        [("BRL", "1000.00", "10.00"), ("KWD", "5.000", "1.250"), ("CLP", "90000", "1500")],
    )
    def test_amounts_keep_their_exponent(self, currency: str, balance: str, amount: str) -> None:
        """Decimal('10.00') comes back as '10.00', not '10' or 10.0."""
        decision = make_guard({currency: balance}).check(amount, currency)
        back = Decision.model_validate_json(decision.model_dump_json())
        assert (amount, balance) == (str(back.amount), str(back.spendable))
        assert back.balance is not None
        assert balance == str(back.balance.available)

    def test_no_amount_in_the_json_is_a_number(self) -> None:
        """Every amount in the JSON is a string; the one JSON number is the balance's age.

        An age is seconds, not money: written as the shortest text that reads back as the
        very same float.
        """
        guard = make_guard({"BRL": {"available": "400.00", "frozen": "600.00"}},
                           [FrozenFunds(max_ratio="0.5")])
        decision = guard.check("10", "BRL", fee="0.25")
        floats: list[str] = []
        json.loads(decision.model_dump_json(), parse_float=floats.append)
        assert [repr(decision.balance_age)] == floats
        data = json.loads(decision.model_dump_json())
        assert ("10.00", "0.25", "400.00") == (data["amount"], data["fee"],
                                              data["balance"]["available"])
        assert "0.6000" == data["reasons"][0]["details"]["ratio"]

    def test_a_decision_without_balance_round_trips(self) -> None:
        """A currency_not_held denial (no balance) round-trips too."""
        decision = make_guard({"BRL": "1.00"}).check("1", "ARS")
        assert decision == Decision.model_validate_json(decision.model_dump_json())

    def test_is_frozen(self) -> None:
        """A decision cannot be changed after it is made."""
        decision = make_guard({"BRL": "1.00"}).check("1", "BRL")
        with pytest.raises(ValidationError):
            decision.allowed = False

    def test_a_copy_with_changes_leaves_other_decisions_as_they_are(self) -> None:
        """Decisions share their (full) fields set; a ``model_copy`` gets its own."""
        guard = make_guard({"BRL": "100.00"})
        first, second = guard.check("1", "BRL"), guard.check("2", "BRL")
        changed = first.model_copy(update={"allowed": False})
        assert (first.allowed, second.allowed, changed.allowed) == (True, True, False)
        assert set(Decision.model_fields) == first.model_fields_set == second.model_fields_set
        assert changed.model_fields_set is not first.model_fields_set


class TestExplain:
    def test_a_denial_shows_every_number_and_each_failing_rule(self) -> None:
        """available, held, reserve, spendable, requested, max payable and the reasons."""
        guard = make_guard({"BRL": "1000.00"},
                           [ReserveMargin(percent="10"), MaxPayout({"BRL": "500"})])
        guard.reserve("200", "BRL", payout_id="po_held")
        decision = guard.check("750", "BRL", fee="1.00", payout_id="po_9")
        expected = "\n".join([
            "DENIED: payout 750.00 BRL + fee 1.00 BRL via static [po_9]",
            "  available    1000.00 BRL  (as of 2023-11-14 22:13:20Z)",
            "  held         200.00 BRL  (1 in-flight: po_held 200.00 pending)",
            "  reserve      100.00 BRL",
            "  spendable    800.00 BRL",
            "  requested    751.00 BRL",
            "  max payable  500.00 BRL",
        ])
        text = decision.explain()
        assert expected == "\n".join(text.splitlines()[:7])
        reasons = text.splitlines()[7:]
        assert ["reserve_margin", "above_maximum_payout"] == [
            line.split(":")[0].removeprefix("  x ") for line in reasons
        ]
        assert "below the reserve of 100.00 BRL (retry later)" in reasons[0]
        assert "above the maximum payout of 500.00 BRL" in reasons[1]

    def test_a_message_that_says_retry_is_not_told_retry_later_again(self) -> None:
        """An outage reads 'can be retried later', once: no '(retry later)' after it."""
        decision = PayoutGuard(FailingFetcher()).check("10", "BRL")
        line = decision.explain().splitlines()[-1]
        assert (True, True, False) == (
            decision.retryable, line.endswith("can be retried later"), "(retry later)" in line
        )

    def test_an_allowed_payout_reads_allowed(self) -> None:
        """The first line says ALLOWED; there are no reason lines."""
        text = make_guard({"CLP": "90000"}).check("1500", "CLP").explain()
        assert text.startswith("ALLOWED: payout 1500 CLP via static\n")
        assert "  x " not in text

    def test_dry_run_is_labelled(self) -> None:
        """A dry-run denial says so."""
        text = make_guard({"BRL": "1.00"}, mode="dry_run").check("2", "BRL").explain()
        assert text.startswith("DENIED (dry run): payout 2.00 BRL")

    def test_frozen_funds_are_shown_when_reported(self) -> None:
        """A provider that reports frozen funds gets a frozen row."""
        text = make_guard({"BRL": {"available": "5.00", "frozen": "1.00"}}).check(
            "1", "BRL").explain()
        assert "  frozen       1.00 BRL" in text.splitlines()

    def test_the_reserve_is_shown_when_the_reserve_rule_passes(self) -> None:
        """The reserve a rule keeps shows whether or not that rule failed."""
        guard = make_guard({"BRL": "1000.00"},
                           [ReserveMargin(percent="10"), MaxPayout({"BRL": "500"})])
        decision = guard.check("600", "BRL")
        assert ("above_maximum_payout",) == decision.codes
        assert Decimal("100.00") == decision.reserve
        assert "  reserve      100.00 BRL" in decision.explain().splitlines()


    def test_the_callers_decimal_context_changes_no_number(self) -> None:
        """Requested 12345.67 + 0.01 reads 12345.68 under a caller's 3-digit context too."""
        decision = make_guard({"BRL": "20000.00"}).check("12345.67", "BRL", fee="0.01")
        with localcontext() as ctx:
            ctx.prec = 3
            text = decision.explain()
        assert "  requested    12345.68 BRL" in text.splitlines()


class TestRaiseForDenial:
    def test_returns_the_decision_when_allowed(self) -> None:
        """An allowed decision returns itself, for chaining."""
        decision = make_guard({"BRL": "10.00"}).check("1", "BRL")
        assert decision is decision.raise_for_denial()

    def test_raises_payout_denied_carrying_the_decision(self) -> None:
        """An enforced denial raises PayoutDenied with the decision attached."""
        decision = make_guard({"BRL": "10.00"}).check("11", "BRL")
        with pytest.raises(PayoutDenied) as info:
            decision.raise_for_denial()
        assert decision is info.value.decision

    def test_a_dry_run_denial_does_not_raise(self) -> None:
        """Dry-run never blocks: a would-be denial returns itself, still not allowed."""
        decision = make_guard({"BRL": "10.00"}, mode="dry_run").check("11", "BRL")
        assert decision is decision.raise_for_denial()
        assert (False, ("insufficient_funds",)) == (decision.allowed, decision.codes)


class TestBlocks:
    @pytest.mark.parametrize(
        ("mode", "amount", "expected"),
        [("enforce", "11", True), ("enforce", "1", False),
         ("dry_run", "11", False), ("dry_run", "1", False)],
    )
    def test_only_an_enforced_denial_blocks(self, mode: str, amount: str,
                                            expected: bool) -> None:
        """A denial in enforce mode blocks; an allowed or dry-run decision does not."""
        decision = make_guard({"BRL": "10.00"}, mode=mode).check(amount, "BRL")
        assert expected == decision.blocks

    def test_blocks_is_not_part_of_the_json(self) -> None:
        """The property is derived from allowed and mode: the JSON form is unchanged."""
        decision = make_guard({"BRL": "10.00"}).check("11", "BRL")
        assert "blocks" not in json.loads(decision.model_dump_json())

    def test_retryable_and_codes(self) -> None:
        """The codes are listed in order; retryable holds when every reason is retryable."""
        guard = make_guard({"BRL": "1000.00"}, [MaxPayout({"BRL": "500"})])
        short = guard.check("1500", "BRL")
        assert (("insufficient_funds", "above_maximum_payout"), False) == (
            short.codes, short.retryable
        )
        only_funds = make_guard({"BRL": "1.00"}).check("2", "BRL")
        assert (("insufficient_funds",), True) == (only_funds.codes, only_funds.retryable)
        allowed = make_guard({"BRL": "1.00"}).check("1", "BRL")
        assert ((), False) == (allowed.codes, allowed.retryable)
