"""One structured ``payout_guard.decision`` event per decision, and nothing secret in it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, ClassVar

import pytest
import structlog
from structlog.testing import capture_logs

from guard import Decision, PayoutDenied, PayoutGuard, __version__, rules_fingerprint
from guard._judge import log_decision
from guard.testing import FailingFetcher, StaticFetcher
from rules import MaxBalanceAge, MaxPayout
from tests._guard_strategies import FakeClock


def decisions_in(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "payout_guard.decision"]


def make_guard(**options: object) -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(StaticFetcher({"BRL": "100.00"}, name="luxcore", clock=clock),
                       [MaxPayout({"BRL": "80"})], clock=clock, **options)  # type: ignore[arg-type]  # the guard's keyword options


class TestDecisionEvent:
    def test_check_logs_one_event_with_the_decision_and_its_facts(self) -> None:
        """The request, the balance, the held total, reasons with messages, rules and version.

        "Why was payout X denied?" is answered by the log.
        """
        guard = make_guard()
        with capture_logs() as logs:
            decision = guard.check("90", "BRL", payout_id="po_7")
        stamp = "2023-11-14T22:13:20+00:00"
        assert [{
            "event": "payout_guard.decision",
            "log_level": "info",
            "decision_id": decision.decision_id,
            "allowed": False,
            "codes": ["above_maximum_payout"],
            "amount": "90.00",
            "currency": "BRL",
            "provider": "luxcore",
            "mode": "enforce",
            "payout_id": "po_7",
            "fee": "0.00",
            "account": None,
            "reasons": [{"code": "above_maximum_payout",
                         "message": "90.00 BRL is above the maximum payout of 80.00 BRL"}],
            "warnings": [],
            "max_payable": "80.00",
            "held": "0.00",
            "balance": {"available": "100.00", "frozen": None, "total": None, "account": None,
                        "as_of": stamp, "requested_at": stamp},
            "balance_age": 0.0,
            "balance_source": "fetched",
            "own_in_flight": "0",
            "rules_fingerprint": rules_fingerprint(guard.rules),
            "version": __version__,
        }] == logs

    def test_amounts_are_logged_as_strings(self) -> None:
        """The amount in the log keeps its exponent, never a float."""
        with capture_logs() as logs:
            make_guard().check("10", "BRL")
        assert "10.00" == logs[0]["amount"]

    def test_a_stale_balance_refresh_still_logs_one_decision(self) -> None:
        """Judging twice (stale, then refreshed) is one decision, one event."""
        clock = FakeClock()
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock), [MaxBalanceAge(5)],
                            clock=clock, cache_ttl=60)
        guard.check("1", "BRL")
        clock.advance(10)
        with capture_logs() as logs:
            assert guard.check("1", "BRL").allowed
        assert 1 == len(decisions_in(logs))

    @pytest.mark.parametrize("amount", ["10", "90"])
    def test_reserve_logs_one_event_whether_allowed_or_denied(self, amount: str) -> None:
        """A reserve is one decision, even when it raises PayoutDenied."""
        guard = make_guard()
        with capture_logs() as logs, contextlib.suppress(PayoutDenied):
            guard.reserve(amount, "BRL", payout_id="po_1")
        assert [amount + ".00"] == [entry["amount"] for entry in decisions_in(logs)]

    def test_a_duplicate_reserve_logs_its_own_event(self) -> None:
        """Asking again for the same payout is a decision too: a duplicate_payout denial."""
        guard = make_guard()
        first = guard.reserve("10", "BRL", payout_id="po_1")
        with capture_logs() as logs, pytest.raises(PayoutDenied) as denied:
            guard.reserve("10", "BRL", payout_id="po_1")
        again = denied.value.decision
        assert [(again.decision_id, ["duplicate_payout"])] == [
            (e["decision_id"], e["codes"]) for e in decisions_in(logs)]
        assert first.decision.decision_id != again.decision_id

    def test_protect_logs_one_event_per_call(self) -> None:
        """Each guarded call is one decision event."""
        guard = make_guard()

        @guard.protect()
        def pay(amount: str, currency: str) -> None:
            pass

        with capture_logs() as logs:
            pay("1", "BRL")
            pay("2", "BRL")
        assert ["1.00", "2.00"] == [entry["amount"] for entry in decisions_in(logs)]

    def test_an_outage_logs_no_secret(self) -> None:
        """The text of an exception we do not own never reaches the log."""
        with capture_logs() as logs:
            PayoutGuard(FailingFetcher(RuntimeError("api_key=sk_live_123"))).check("1", "BRL")
        assert "sk_live_123" not in repr(logs)
        assert ["balance_unavailable"] == decisions_in(logs)[0]["codes"]


class LevelLogger:
    """A logger that emits from *level* up and keeps what it emitted."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.events: list[str] = []

    def is_enabled_for(self, level: int) -> bool:
        return level >= self.level

    def info(self, event: str, **fields: object) -> None:  # noqa: ARG002 - a logger's signature
        self.events.append(event)

    def warning(self, event: str, **fields: object) -> None:  # noqa: ARG002 - a logger's signature
        self.events.append(event)


class CountedDecision(Decision):
    """A decision that counts how often its log fields are built."""

    built: ClassVar[list[str]] = []

    def log_fields(self) -> dict[str, Any]:
        self.built.append(self.decision_id)
        return super().log_fields()


def counted(decision: Decision) -> CountedDecision:
    CountedDecision.built.clear()
    return CountedDecision.model_construct(**dict(decision))


class TestLevels:
    @pytest.mark.parametrize(
        ("level", "mode", "amount", "events", "built"),
        [
            (logging.WARNING, "enforce", "10", [], 0),
            (logging.WARNING, "enforce", "90", [], 0),
            (logging.WARNING, "dry_run", "90", ["payout_guard.would_deny"], 1),
            (logging.INFO, "enforce", "10", ["payout_guard.decision"], 1),
            (logging.INFO, "dry_run", "90",
             ["payout_guard.decision", "payout_guard.would_deny"], 1),
        ],
    )
    def test_fields_are_built_only_for_events_the_level_lets_through(
        self, level: int, mode: str, amount: str, events: list[str], built: int
    ) -> None:
        """A logger filtering at WARNING costs an allowed check no log fields at all."""
        decision = counted(make_guard(mode=mode).check(amount, "BRL"))
        log = LevelLogger(level)
        log_decision(log, decision)
        assert (events, built) == (log.events, len(CountedDecision.built))

    def test_a_logger_that_cannot_say_its_level_gets_every_event(self) -> None:
        """Without is_enabled_for, the decision is logged: nothing is dropped by guessing."""

        class Plain:
            events: ClassVar[list[str]] = []

            def info(self, event: str, **fields: object) -> None:  # noqa: ARG002 - a logger's signature
                self.events.append(event)

        log_decision(Plain(), make_guard().check("10", "BRL"))
        assert ["payout_guard.decision"] == Plain.events


@pytest.fixture
def restored_structlog() -> Iterator[None]:
    """Put structlog's configuration back as it was after the test."""
    before = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**before)


class TestCachedLogger:
    def test_a_logger_structlog_caches_is_logged_to_directly(
        self, restored_structlog: None  # noqa: ARG002 - the fixture restores structlog
    ) -> None:
        """With cache_logger_on_first_use, decisions go to the logger assembled first."""
        seen: list[str] = []

        def keep(_: object, __: str, event: MutableMapping[str, Any]) -> Any:
            seen.append(event["event"])
            raise structlog.DropEvent

        structlog.configure(processors=[keep], cache_logger_on_first_use=True,
                            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        guard = make_guard()
        guard.check("10", "BRL")
        assert guard.core.logging_to is not None
        guard.check("90", "BRL")
        # Like structlog's own cached loggers, a later configuration does not apply.
        structlog.configure(processors=[], cache_logger_on_first_use=True)
        guard.check("20", "BRL")
        assert ["payout_guard.decision"] * 3 == seen

    def test_a_logger_assembled_each_time_follows_the_configuration(
        self, restored_structlog: None  # noqa: ARG002 - the fixture restores structlog
    ) -> None:
        """Without caching, every decision asks the proxy: a new configuration applies."""
        structlog.configure(cache_logger_on_first_use=False,
                            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
        guard = make_guard()
        guard.check("10", "BRL")
        assert guard.core.logging_to is None
        with capture_logs() as logs:
            guard.check("20", "BRL")
        assert ["payout_guard.decision"] == [entry["event"] for entry in logs]


def hold_changes(logs: Sequence[MutableMapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(e["change"], e["payout_id"], e["amount"], e["currency"])
            for e in logs if e["event"] == "payout_guard.hold"]


class TestHoldEvents:
    def test_a_sent_payout_is_reserved_then_committed(self) -> None:
        """Each change of a hold is one payout_guard.hold event, with amount and currency."""
        with capture_logs() as logs, make_guard().reserve("50", "BRL", payout_id="po_1"):
            pass
        assert [("reserved", "po_1", "50.00", "BRL"), ("committed", "po_1", "50.00", "BRL")] == (
            hold_changes(logs)
        )

    def test_a_payout_not_sent_is_reserved_then_released(self) -> None:
        """A release is logged with what it gave back."""
        with capture_logs() as logs:
            make_guard().reserve("50", "BRL", payout_id="po_1", fee="1").release()
        assert [("reserved", "po_1", "51.00", "BRL"), ("released", "po_1", "51.00", "BRL")] == (
            hold_changes(logs)
        )

    def test_an_unknown_outcome_is_uncertain_then_resolved(self) -> None:
        """Marked uncertain, then resolved by an operator: both logged, at warning level."""
        guard = make_guard()
        with capture_logs() as logs:
            guard.reserve("50", "BRL", payout_id="po_1").mark_uncertain()
            guard.resolve("po_1", sent=False)
        assert [("reserved", "debug"), ("uncertain", "warning"), ("resolved", "warning")] == [
            (e["change"], e["log_level"]) for e in logs if e["event"] == "payout_guard.hold"
        ]

    def test_the_reserved_event_says_when_the_hold_expires(self) -> None:
        """A pending hold's expires_at is logged, so a lapsed hold can be traced."""
        guard = make_guard(hold_ttl=60)
        with capture_logs() as logs:
            reservation = guard.reserve("50", "BRL", payout_id="po_1")
        (reserved,) = [e for e in logs if e["event"] == "payout_guard.hold"]
        assert reservation.hold is not None
        assert reservation.hold.expires_at == reserved["expires_at"]

    def test_nothing_is_held_nothing_is_logged_in_dry_run(self) -> None:
        """A dry-run reservation holds nothing, so no hold event is logged."""
        with capture_logs() as logs, make_guard(mode="dry_run").reserve(
            "50", "BRL", payout_id="po_1"
        ):
            pass
        assert [] == hold_changes(logs)
