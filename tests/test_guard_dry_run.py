"""Dry-run (shadow) mode: every decision judged and recorded, nothing blocked or held."""

from __future__ import annotations

from structlog.testing import capture_logs

from guard import PayoutGuard
from guard.testing import FailingFetcher, StaticFetcher, capture_decisions
from rules import MaxPayout
from tests._guard_strategies import FakeClock


def dry_guard(balance: str = "100.00") -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(StaticFetcher({"BRL": balance}, clock=clock),
                       [MaxPayout({"BRL": "80"})], mode="dry_run", clock=clock)


class TestDryRunCheck:
    def test_a_would_be_denial_is_recorded_as_a_denial(self) -> None:
        """The decision says what enforce mode would do: denied, with reasons, mode dry_run."""
        with capture_decisions() as decisions:
            decision = dry_guard().check("120", "BRL")
        assert (False, "dry_run", ("insufficient_funds", "above_maximum_payout")) == (
            decision.allowed, decision.mode, decision.codes
        )
        assert [decision] == decisions

    def test_a_would_be_denial_is_logged_as_a_warning_too(self) -> None:
        """Besides the decision event, payout_guard.would_deny carries the same fields."""
        with capture_logs() as logs:
            decision = dry_guard().check("90", "BRL")
        assert ["payout_guard.decision", "payout_guard.would_deny"] == [
            entry["event"] for entry in logs
        ]
        assert {**decision.log_fields(), "event": "payout_guard.would_deny",
                "log_level": "warning"} == logs[1]

    def test_an_allowed_payout_logs_no_warning(self) -> None:
        """Only would-be denials warn."""
        with capture_logs() as logs:
            assert dry_guard().check("10", "BRL").allowed
        assert ["payout_guard.decision"] == [entry["event"] for entry in logs]

    def test_an_outage_is_a_would_be_denial(self) -> None:
        """Fail closed applies in dry-run too: the record shows balance_unavailable."""
        decision = PayoutGuard(FailingFetcher(), mode="dry_run").check("1", "BRL")
        assert (False, ("balance_unavailable",), "dry_run") == (
            decision.allowed, decision.codes, decision.mode
        )


class TestDryRunReserve:
    def test_a_would_be_denial_does_not_raise_and_holds_nothing(self) -> None:
        """A reservation comes back with the denial and no hold."""
        guard = dry_guard()
        reservation = guard.reserve("120", "BRL", payout_id="po_1")
        assert (False, None, "none") == (
            reservation.decision.allowed, reservation.hold, reservation.state
        )
        assert None is guard.reservations.get("po_1")

    def test_an_allowed_payout_holds_nothing_either(self) -> None:
        """Shadow mode never takes funds: the next check sees the whole balance."""
        guard = dry_guard()
        with guard.reserve("60", "BRL", payout_id="po_1") as reservation:
            pass
        assert (True, "none", None) == (
            reservation.decision.allowed, reservation.state, guard.reservations.get("po_1")
        )
        assert "100.00" == str(guard.check("1", "BRL").spendable)

    def test_each_reserve_is_recorded_once(self) -> None:
        """capture_decisions sees one decision per reserve, allowed or not."""
        guard = dry_guard()
        with capture_decisions() as decisions:
            guard.reserve("60", "BRL", payout_id="po_1")
            guard.reserve("120", "BRL", payout_id="po_2")
        assert [("po_1", True), ("po_2", False)] == [
            (d.payout_id, d.allowed) for d in decisions
        ]
