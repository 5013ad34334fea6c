"""Exactly once: each way a payout used to leave twice, or a hold went missing, as a regression.

The scenarios are the ones measured before the fix (issue 9): a retried job ran its body twice,
a second handle released the first one's hold, a provider timeout released a hold on money
that had left, a cancelled ``async def`` leaked its hold, ``payout_id=None`` skipped the hold,
and a store that lost its holds carried on as if nothing was in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog
from structlog.testing import capture_logs

from guard import (
    AsyncPayoutGuard,
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutDenied,
    PayoutGuard,
    PayoutNotSent,
    PayoutOutcomeUnknown,
    StoreUnavailable,
)
from guard._reservation import GiveBacks
from guard.stores import Hold, HoldOutcome, InMemoryReservations, SqliteReservations
from guard.testing import StaticFetcher, capture_decisions
from tests._guard_strategies import BlockingFetcher, FakeClock


def make_guard(balance: str = "100.00", **options: Any) -> tuple[PayoutGuard, FakeClock]:
    """Return a guard over a fixed BRL balance and its fake clock."""
    clock = FakeClock()
    fetcher = StaticFetcher({"BRL": balance}, clock=clock)
    return PayoutGuard(fetcher, clock=clock, cache_ttl=0, **options), clock


class TestARetriedJobSendsOnce:
    def test_the_body_runs_once_for_one_payout_id(self) -> None:
        """A job retried with the same id: 80.00 leaves once, the retry is a duplicate."""
        guard, _ = make_guard()
        sent: list[tuple[str, str, str]] = []

        @guard.protect(payout_id="ref")
        def send(amount: str, currency: str, ref: str) -> None:
            sent.append((ref, amount, currency))

        send("80.00", "BRL", ref="X")
        with pytest.raises(PayoutDenied) as retry:
            send("80.00", "BRL", ref="X")
        reason = retry.value.decision.reasons[0]
        assert [("X", "80.00", "BRL")] == sent
        assert ("duplicate_payout", False, "committed") == (
            reason.code, reason.retryable, reason.details["state"])

    def test_a_retry_while_the_first_attempt_is_sending_is_retryable(self) -> None:
        """The id is pending (someone is sending it now): refused, but worth retrying later."""
        guard, _ = make_guard()
        refused: list[PayoutDenied] = []

        @guard.protect(payout_id="ref")
        def send(amount: str, currency: str, ref: str) -> None:
            try:
                send(amount, currency, ref=ref)  # the same job, started again meanwhile
            except PayoutDenied as exc:
                refused.append(exc)

        send("80.00", "BRL", ref="X")
        decision = refused[0].decision
        assert (("duplicate_payout",), True, "pending") == (
            decision.codes, decision.retryable, decision.reasons[0].details["state"])


class AnswerLostOnce(InMemoryReservations):
    """A store whose first ``try_hold`` is applied, its answer lost and the request sent again.

    What a client that retries once on a dropped connection (redis-py) makes of a reply lost
    on its way back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        if not self.applied:
            self.applied += 1
            super().try_hold(hold, ceiling=ceiling, counted_since=counted_since, now=now)
        self.applied += 1
        return super().try_hold(hold, ceiling=ceiling, counted_since=counted_since, now=now)


class DropsTheFirstTryHoldReply:
    """A TCP proxy to Redis that relays the first ``try_hold`` call, then drops its reply."""

    def __init__(self, port: int) -> None:
        self.port_to = port
        self.armed = True
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.port_to))
                muted = threading.Event()  # this link's replies are dropped from now on
                threading.Thread(target=self._up, args=(client, server, muted),
                                 daemon=True).start()
                threading.Thread(target=self._down, args=(server, client, muted),
                                 daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError), client, server:
            while data := client.recv(65536):
                if self.armed and b"_try_hold\r\n" in data:
                    self.armed = False
                    muted.set()
                    server.sendall(data)
                    time.sleep(0.2)  # Redis has run it; its reply was not relayed
                    client.shutdown(socket.SHUT_RDWR)
                    return
                server.sendall(data)

    @staticmethod
    def _down(server: socket.socket, client: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not muted.is_set():
                    client.sendall(data)

    def close(self) -> None:
        self.listener.close()


class TestALostAnswerIsNotADuplicate:
    def test_a_hold_taken_twice_by_one_reservation_is_its_own(self) -> None:
        """Its own hold, found by the request sent again, is held: not a duplicate."""
        store = AnswerLostOnce()
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        with guard.reserve("80.00", "BRL", payout_id="X") as reservation:
            assert 2 == store.applied
            assert Decimal("80.00") == guard.check("1", "BRL").reserved  # counted once
        assert "committed" == reservation.state
        assert Decimal("80.00") == guard.check("1", "BRL").reserved

    def test_redis_retrying_a_try_hold_whose_reply_was_lost_holds_once(
        self, redis_url: str
    ) -> None:
        """redis-py sends the call again on a new connection: the hold is this reservation's."""
        pytest.importorskip("redis")
        from guard.stores import RedisReservations

        proxy = DropsTheFirstTryHoldReply(urlsplit(redis_url).port or 6379)
        store = RedisReservations(f"redis://127.0.0.1:{proxy.port}/0",
                                  namespace=f"lost-{uuid.uuid4().hex}", timeout=5)
        try:
            guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
            with guard.reserve("80.00", "BRL", payout_id="X") as reservation:
                assert not proxy.armed  # its reply was dropped
            assert "committed" == reservation.state
            assert Decimal("80.00") == guard.check("1", "BRL").reserved
        finally:
            store.close()
            proxy.close()


class SilencesTryHolds(DropsTheFirstTryHoldReply):
    """A TCP proxy to Redis: while ``silent``, a link that carries a ``try_hold`` gets no replies.

    Redis runs the call (the hold is written); the client hears nothing and times out.
    """

    def __init__(self, port: int) -> None:
        self.silent = threading.Event()
        self.silenced = 0
        super().__init__(port)

    def _up(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        with contextlib.suppress(OSError), client, server:
            while data := client.recv(65536):
                if self.silent.is_set() and b"_try_hold\r\n" in data:
                    self.silenced += 1
                    muted.set()
                server.sendall(data)


def released_soon(guard: PayoutGuard, payout_id: str, *, within: float = 10.0) -> bool:
    """Return whether *payout_id* has no hold within *within* seconds."""
    until = time.monotonic() + within
    while guard.hold(payout_id) is not None:
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


class TestAHoldTheStoreMayHaveTakenIsGivenBack:
    """A hold nobody would end: its ``try_hold`` was run by the store but never answered.

    The payout was denied, so the hold kept its funds and refused the id's retry until its ttl.
    """

    def test_redis_ran_the_try_hold_but_its_answer_never_came(self, redis_url: str) -> None:
        """Denied as store trouble; once Redis answers again, the id's retry goes out."""
        pytest.importorskip("redis")
        from guard.stores import RedisReservations

        proxy = SilencesTryHolds(urlsplit(redis_url).port or 6379)
        namespace = f"unsure-{uuid.uuid4().hex}"
        store = RedisReservations(f"redis://127.0.0.1:{proxy.port}/0", namespace=namespace,
                                  timeout=0.3)
        direct = RedisReservations(redis_url, namespace=namespace)
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        try:
            proxy.silent.set()
            with capture_logs() as logs:
                with pytest.raises(PayoutDenied) as denied:
                    guard.reserve("80.00", "BRL", payout_id="X")
                assert 1 == proxy.silenced
                written = direct.get("X")  # Redis took it, as the store could not tell
                proxy.silent.clear()
                assert released_soon(guard, "X")
            with guard.reserve("80.00", "BRL", payout_id="X") as retry:
                pass
        finally:
            guard.close()
            direct.close()
            proxy.close()
        assert ("balance_unavailable",) == denied.value.decision.codes
        assert "pending" == (written.state if written else None)
        assert ("committed", Decimal("80.00")) == (retry.state, retry.decision.amount)
        assert [("X", "80.00")] == [
            (e["payout_id"], e["amount"]) for e in logs if e.get("change") == "given_back"
        ]

    @pytest.mark.parametrize("how", ["timed_out", "cancelled_at_loop_end"])
    def test_on_redis_asyncio_too(self, redis_url: str, how: str) -> None:
        """On asyncio: timed out, or its task cancelled as the loop closed; given back too."""
        pytest.importorskip("redis")
        from guard.stores import RedisReservations

        proxy = SilencesTryHolds(urlsplit(redis_url).port or 6379)
        store = RedisReservations(f"redis://127.0.0.1:{proxy.port}/0",
                                  namespace=f"unsure-{uuid.uuid4().hex}",
                                  timeout=0.3 if how == "timed_out" else 5)
        guard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)

        async def scenario() -> None:
            reserving = asyncio.ensure_future(guard.reserve("80.00", "BRL", payout_id="X"))
            if how == "timed_out":
                with pytest.raises(PayoutDenied):
                    await reserving
                return
            while not proxy.silenced:
                await asyncio.sleep(0.01)
            reserving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reserving
            # asyncio.run returns now, cancelling the store's call still awaiting Redis

        proxy.silent.set()
        try:
            asyncio.run(scenario())
            proxy.silent.clear()
            until = time.monotonic() + 10
            while store.get("X") is not None and time.monotonic() < until:
                time.sleep(0.05)
            assert (1, None) == (proxy.silenced, store.get("X"))
        finally:
            asyncio.run(guard.aclose())
            proxy.close()

    def test_a_store_that_does_not_answer_is_asked_again_until_it_does(
        self, tmp_path: Path
    ) -> None:
        """SQLite closed meanwhile (a restart): given back once it is open again."""
        store = SqliteReservations(tmp_path / "holds.db")
        hold = _pending_hold(store, "X")
        store.close()
        give_backs = GiveBacks(lambda h: store.release(h.payout_id, owner=h.owner), time.time)
        give_backs.add(hold)
        time.sleep(0.4)  # asked at 0.1 s and 0.3 s: no answer
        assert 1 == len(give_backs)
        store.rearm()
        until = time.monotonic() + 10
        while len(give_backs) and time.monotonic() < until:
            time.sleep(0.05)
        assert (0, None) == (len(give_backs), store.get("X"))

    def test_a_hold_written_after_the_first_answer_is_still_given_back(
        self, tmp_path: Path
    ) -> None:
        """The store said it had no such hold; the write landed later: asked again after 1 s."""
        store = SqliteReservations(tmp_path / "holds.db")
        asked: list[bool] = []

        def release(h: Hold) -> bool:
            asked.append(store.release(h.payout_id, owner=h.owner))
            return asked[-1]

        give_backs = GiveBacks(release, time.time)
        late = _hold("X")
        give_backs.add(late)
        time.sleep(0.3)
        _pending_hold(store, "X", late)  # the write the store took after it answered
        until = time.monotonic() + 10
        while len(give_backs) and time.monotonic() < until:
            time.sleep(0.05)
        assert ([False, True], None) == (asked, store.get("X"))

    def test_another_reservations_hold_is_left_alone(self, tmp_path: Path) -> None:
        """Released by its owner token: a hold of the same id another reservation took stays."""
        store = SqliteReservations(tmp_path / "holds.db")
        theirs = _pending_hold(store, "X")
        asked: list[bool] = []

        def release(h: Hold) -> bool:
            asked.append(store.release(h.payout_id, owner=h.owner))
            return asked[-1]

        give_backs = GiveBacks(release, time.time)
        give_backs.add(_hold("X"))  # the same id, another owner: never written
        give_backs.close()  # asked once more, then stopped
        assert ([False], "pending", 0) == (
            asked, (store.get("X") or theirs).state, len(give_backs))
        assert theirs.owner == (store.get("X") or pytest.fail("gone")).owner

    def test_a_hold_past_its_ttl_is_not_asked_for(self) -> None:
        """The store counts it no more: nothing to give back."""
        asked: list[Hold] = []

        def release(h: Hold) -> bool:
            asked.append(h)
            return True

        clock = FakeClock()
        give_backs = GiveBacks(release, clock)
        clock.advance(3600)
        give_backs.add(_hold("X", now=clock() - 3600))
        give_backs.close()
        assert ([], 0) == (asked, len(give_backs))


def _hold(payout_id: str, *, now: float | None = None) -> Hold:
    now = time.time() if now is None else now
    return Hold(payout_id=payout_id, key="p:acc:BRL", currency="BRL", amount=Decimal("80.00"),
                fee=Decimal("0.00"), state="pending", created_at=now, expires_at=now + 300,
                owner=uuid.uuid4().hex)


def _pending_hold(store: SqliteReservations, payout_id: str, hold: Hold | None = None) -> Hold:
    """Take *hold* (a new one when ``None``) in *store*; return it."""
    hold = hold or _hold(payout_id)
    outcome = store.try_hold(hold, ceiling=Decimal("100.00"), counted_since=hold.created_at - 30,
                             now=hold.created_at)
    assert "held" == outcome.status
    return hold


class TestAHoldBelongsToItsReservation:
    def test_a_second_reserve_gets_no_handle_on_the_first_hold(self) -> None:
        """reserve(X) twice: the second is refused, so nobody else can release X's hold."""
        guard, _ = make_guard()
        first = guard.reserve("80.00", "BRL", payout_id="X")
        with pytest.raises(PayoutDenied):
            guard.reserve("80.00", "BRL", payout_id="X")
        assert ("pending", Decimal("80.00")) == (first.state, guard.check("1", "BRL").reserved)

    def test_a_stale_handle_cannot_commit_or_release_the_hold_a_retry_took(self) -> None:
        """After its ttl the id was reserved again: the old handle touches nothing."""
        guard, clock = make_guard(hold_ttl=60)
        stale = guard.reserve("80.00", "BRL", payout_id="X")
        clock.advance(61)
        retry = guard.reserve("50.00", "BRL", payout_id="X")
        with pytest.raises(GuardError, match="now belongs to another reservation"):
            stale.commit()
        assert stale.release() is False
        held = guard.hold("X")
        assert ("pending", Decimal("50.00")) == (
            held.state if held else None, held.amount if held else None)
        retry.commit()
        assert "committed" == retry.state


def state_soon(guard: PayoutGuard, payout_id: str, wanted: str, *, within: float = 10.0) -> bool:
    """Return whether the hold of *payout_id* reaches the state *wanted* within *within* s."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        hold = guard.hold(payout_id)
        if hold is not None and hold.state == wanted:
            return True
        time.sleep(0.05)
    return False


def locked_store_guard(path: Path) -> tuple[PayoutGuard, FakeClock, sqlite3.Connection]:
    """Return a guard on a SQLite store, its clock, and a connection that can lock the store."""
    clock = FakeClock()
    guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}, clock=clock), clock=clock, cache_ttl=0,
                        reservations=SqliteReservations(path, timeout=0.2), hold_ttl=60)
    return guard, clock, sqlite3.connect(path, isolation_level=None)


class TestAnEndingTheStoreMissedIsTriedAgain:
    """A hold left pending after its money left would free its id at its ttl: not allowed."""

    @pytest.mark.parametrize(
        ("raised", "state"), [(None, "committed"), (TimeoutError("read timed out"), "uncertain")],
        ids=["commit", "uncertain"],
    )
    def test_the_ending_is_recorded_once_the_store_answers_and_the_id_stays_taken(
        self, tmp_path: Path, raised: BaseException | None, state: str
    ) -> None:
        """Another process locks the store (a backup, a migration) while the payout is sent."""
        guard, clock, blocker = locked_store_guard(tmp_path / "holds.db")
        sent: list[str] = []

        @guard.protect(payout_id="ref")
        def send(amount: str, currency: str, ref: str) -> None:
            sent.append(f"{ref} {amount} {currency}")
            if len(sent) == 1:
                blocker.execute("BEGIN IMMEDIATE")
                if raised is not None:
                    raise raised

        with capture_logs() as logs:
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                send("80.00", "BRL", ref="X")
            assert "pending" == (guard.hold("X") or pytest.fail("no hold")).state
            blocker.execute("ROLLBACK")
            assert state_soon(guard, "X", state)
        clock.advance(61)  # past the hold's ttl: the job is retried
        with pytest.raises(PayoutDenied) as retry:
            send("80.00", "BRL", ref="X")
        assert ["X 80.00 BRL"] == sent
        assert ("duplicate_payout",) == retry.value.decision.codes
        assert [("payout_guard.hold_not_settled", True, None),
                ("payout_guard.hold", None, "settled_late")] == [
            (e["event"], e.get("retrying"), e.get("change")) for e in logs
            if e["event"] == "payout_guard.hold_not_settled" or e.get("change") == "settled_late"
        ]

    def test_an_async_commit_is_recorded_once_the_store_answers(self, tmp_path: Path) -> None:
        """The same, awaited: a task of the event loop goes on trying."""
        path = tmp_path / "holds.db"
        blocker = sqlite3.connect(path, isolation_level=None)

        async def scenario() -> tuple[str | None, tuple[str, ...]]:
            guard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}), cache_ttl=0,
                                     reservations=SqliteReservations(path, timeout=0.2))
            with pytest.raises(StoreUnavailable):
                async with guard.reserve("80.00", "BRL", payout_id="X"):
                    blocker.execute("BEGIN IMMEDIATE")
            blocker.execute("ROLLBACK")
            until = time.monotonic() + 10
            while (held := await guard.hold("X")) is not None and held.state == "pending" and (
                time.monotonic() < until
            ):
                await asyncio.sleep(0.05)
            retry = await guard.check("80.00", "BRL", payout_id="X")
            return None if held is None else held.state, retry.codes

        assert ("committed", ("duplicate_payout",)) == asyncio.run(scenario())


class TestAnUnknownOutcomeKeepsItsHold:
    def test_a_timeout_after_the_provider_took_the_payout_keeps_the_money_held(self) -> None:
        """The HTTP call timed out: the hold turns uncertain and the next payout is denied."""
        guard, _ = make_guard()
        with pytest.raises(TimeoutError), guard.reserve("80.00", "BRL", payout_id="X"):
            raise TimeoutError("read timed out")  # the provider may have accepted it
        decision = guard.check("80.00", "BRL")
        assert (("insufficient_funds",), Decimal("80.00")) == (decision.codes, decision.reserved)
        with pytest.raises(PayoutDenied) as again:
            guard.reserve("80.00", "BRL", payout_id="X")
        assert ("uncertain", False) == (
            again.value.decision.reasons[0].details["state"], again.value.decision.retryable)

    @pytest.mark.parametrize(
        ("raised", "state"),
        [(PayoutNotSent("refused"), None), (ValueError("bad input"), None),
         (PayoutOutcomeUnknown("no answer"), "uncertain"), (ConnectionError(), "uncertain"),
         (KeyboardInterrupt(), "uncertain")],
        ids=["not-sent", "plain-error", "outcome-unknown", "oserror", "interrupt"],
    )
    def test_how_the_body_fails_decides_the_hold(
        self, raised: BaseException, state: str | None
    ) -> None:
        """PayoutNotSent and plain errors release; OSError, unknown outcome, interrupts keep."""
        guard, _ = make_guard()
        with pytest.raises(type(raised)), guard.reserve("80.00", "BRL", payout_id="X"):
            raise raised
        held = guard.hold("X")
        assert state == (held.state if held else None)

    def test_payout_not_sent_releases_even_when_it_is_in_uncertain_on(self) -> None:
        """Saying the payout did not leave is stronger than any uncertain_on class."""
        guard, _ = make_guard(uncertain_on=GuardError)
        with pytest.raises(PayoutNotSent), guard.reserve("80.00", "BRL", payout_id="X"):
            raise PayoutNotSent("provider refused: insufficient balance")
        assert None is guard.hold("X")

    def test_uncertain_on_can_be_changed_per_function(self) -> None:
        """protect(uncertain_on=...) replaces the guard's classes for that function."""
        guard, _ = make_guard()

        @guard.protect(payout_id="ref", uncertain_on=LookupError)
        def send(amount: str, currency: str, ref: str) -> None:
            raise {"X": KeyError, "Y": TimeoutError}[ref](amount, currency)

        for ref, raised in (("X", KeyError), ("Y", TimeoutError)):
            with pytest.raises(raised):
                send("10.00", "BRL", ref=ref)
        held = guard.hold("X")
        assert ("uncertain", None) == (held.state if held else None, guard.hold("Y"))

    def test_uncertain_on_must_be_exception_classes(self) -> None:
        """Anything else is refused when the guard is built."""
        with pytest.raises(ConfigurationError, match="uncertain_on"):
            make_guard(uncertain_on=("OSError",))

    def test_resolve_sent_commits_and_keeps_the_id_taken(self) -> None:
        """The operator learned it left: committed now, counted until a balance shows it."""
        guard, _ = make_guard(settle_lag=30)
        guard.reserve("80.00", "BRL", payout_id="X").mark_uncertain()
        resolved = guard.resolve("X", sent=True)
        assert "committed" == (resolved.state if resolved else None)
        assert ("insufficient_funds",) == guard.check("80.00", "BRL").codes
        assert ("duplicate_payout",) == guard.check("80.00", "BRL", payout_id="X").codes

    def test_resolve_not_sent_frees_the_funds_and_the_id(self) -> None:
        """The operator learned it did not leave: the hold goes, the id may be sent."""
        guard, _ = make_guard()
        guard.reserve("80.00", "BRL", payout_id="X").mark_uncertain()
        assert None is guard.resolve("X", sent=False)
        assert "pending" == guard.reserve("80.00", "BRL", payout_id="X").state

    def test_only_an_uncertain_hold_is_resolved(self) -> None:
        """Resolving a pending hold, or an id with no hold, says why it cannot."""
        guard, _ = make_guard()
        guard.reserve("80.00", "BRL", payout_id="X")
        with pytest.raises(GuardError, match="'X' is pending, not uncertain"):
            guard.resolve("X", sent=False)
        with pytest.raises(GuardError, match="no hold is recorded for payout 'Y'"):
            guard.resolve("Y", sent=True)

    def test_an_uncertain_hold_lapses_after_uncertain_ttl_with_a_warning(self) -> None:
        """It stops counting after uncertain_ttl, is logged once, and still blocks its id."""
        guard, clock = make_guard(uncertain_ttl=3600)
        guard.reserve("80.00", "BRL", payout_id="X").mark_uncertain()
        clock.advance(3600)
        with capture_logs() as logs:
            guard.reserve("90.00", "BRL", payout_id="Y").release()
            guard.reserve("90.00", "BRL", payout_id="Z").release()
        lapsed = [e for e in logs if e.get("change") == "uncertain_expired"]
        assert [("payout_guard.hold", "warning", "X")] == [
            (e["event"], e["log_level"], e["payout_id"]) for e in lapsed]
        assert ("duplicate_payout",) == guard.check("1", "BRL", payout_id="X").codes


class TestAsyncCancellation:
    def test_cancelled_while_holding_releases_the_hold(self) -> None:
        """A task cancelled while its hold is taken in a thread leaves no hold behind."""
        clock = FakeClock()
        fetcher = BlockingFetcher({"BRL": "100.00"}, clock=clock)
        guard = PayoutGuard(fetcher, clock=clock, cache_ttl=0)
        ran: list[str] = []

        @guard.protect(payout_id="ref")
        async def send(amount: str, currency: str, ref: str) -> None:
            ran.append(f"{ref} {amount} {currency}")

        async def scenario() -> None:
            task = asyncio.create_task(send("80.00", "BRL", ref="X"))
            while fetcher.calls == 0:  # the guard is now judging, in its own thread
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            fetcher.release.set()  # the judging thread goes on and takes the hold

        with capture_decisions() as decided:
            asyncio.run(scenario())
            guard.threads.close()
            # The judging thread decides (the hold is taken), then gives the hold back as
            # soon as it finishes: wait for the decision first, or the hold is not there yet.
            for _ in range(400):
                if decided and guard.hold("X") is None:
                    break
                threading.Event().wait(0.01)
        assert ["reserve X"] == [f"reserve {d.payout_id}" for d in decided]
        assert ([], None, Decimal("0.00")) == (
            ran, guard.hold("X"), guard.check("1", "BRL").reserved)

    def test_cancelled_during_the_body_keeps_the_hold_as_uncertain(self) -> None:
        """Cancelled while sending: the money may have left, so the hold turns uncertain."""
        guard, _ = make_guard()
        started = asyncio.Event()

        @guard.protect(payout_id="ref")
        async def send(amount: str, currency: str, ref: str) -> None:
            started.set()
            await asyncio.sleep(60, f"{ref} {amount} {currency}")

        async def scenario() -> None:
            task = asyncio.create_task(send("80.00", "BRL", ref="X"))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
        held = guard.hold("X")
        assert "uncertain" == (held.state if held else None)

    def test_async_calls_do_not_use_the_loops_default_executor(self) -> None:
        """The guard's blocking work runs in its own pool, named payout_guard."""
        guard, _ = make_guard()
        names: list[str] = []

        class Named(StaticFetcher):
            def fetch(self, currency: str | None = None) -> Any:
                names.append(threading.current_thread().name)
                return super().fetch(currency)

        guard = PayoutGuard(Named({"BRL": "100.00"}), cache_ttl=0)

        @guard.protect(payout_id="ref")
        async def send(amount: str, currency: str, ref: str) -> None:
            pass

        asyncio.run(send("1.00", "BRL", ref="X"))
        assert names
        assert all(name.startswith("payout_guard") for name in names)


class TestAConfiguredPayoutIdIsRequired:
    @pytest.mark.parametrize("ref", [None, ""])
    def test_five_concurrent_sends_without_an_id_are_all_refused(self, ref: str | None) -> None:
        """No id is never a plain check: nothing is sent, nothing is held."""
        guard, _ = make_guard()
        sent: list[str] = []
        refused: list[BaseException] = []

        @guard.protect(payout_id="ref")
        def send(amount: str, currency: str, ref: str | None) -> None:
            sent.append(f"{ref} {amount} {currency}")

        def worker() -> None:
            try:
                send("80.00", "BRL", ref=ref)
            except InvalidPayoutRequest as exc:
                refused.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert ([], 5) == (sent, len(refused))

    def test_five_concurrent_sends_with_ids_send_what_fits(self) -> None:
        """Five 80.00 payouts on 100.00 with their own ids: exactly one leaves."""
        guard, _ = make_guard()
        sent: list[str] = []
        start = threading.Barrier(5)

        @guard.protect(payout_id="ref")
        def send(amount: str, currency: str, ref: str) -> None:
            sent.append(f"{ref} {amount} {currency}")

        def worker(n: int) -> None:
            start.wait()
            with contextlib.suppress(PayoutDenied):
                send("80.00", "BRL", ref=f"po_{n}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert 1 == len(sent)


class TestPayoutIdsAreValidated:
    @pytest.mark.parametrize(
        ("payout_id", "problem"),
        [("", "is empty"), ("x" * 201, "has 201 characters"),
         ("po\n1", "contains a control character"), ("po\x7f", "contains a control character"),
         ("po\ud800", "lone surrogate")],
        ids=["empty", "too-long", "newline", "del", "surrogate"],
    )
    def test_a_bad_id_is_refused_before_anything_is_held(
        self, payout_id: str, problem: str
    ) -> None:
        """The message says what was wrong and what is accepted."""
        guard, _ = make_guard()
        with pytest.raises(InvalidPayoutRequest, match=problem) as info:
            guard.reserve("1.00", "BRL", payout_id=payout_id)
        assert "expected 1 to 200 characters" in str(info.value)
        assert Decimal("0.00") == guard.check("1", "BRL").reserved

    def test_a_huge_id_is_quoted_short(self) -> None:
        """A 10 MB id is not echoed: the message quotes its first 40 characters."""
        guard, _ = make_guard()
        with pytest.raises(InvalidPayoutRequest) as info:
            guard.check("1.00", "BRL", payout_id="y" * 10_000_000)
        assert len(str(info.value)) < 200
        assert "y" * 40 + "'..." in str(info.value)

    def test_two_hundred_characters_are_accepted(self) -> None:
        """The longest id accepted is 200 characters, any printable text."""
        guard, _ = make_guard()
        assert "pending" == guard.reserve("1.00", "BRL", payout_id="é" * 200).state


class TestNoHoldWithoutAHandle:
    def test_a_failure_after_the_hold_is_written_releases_it(self) -> None:
        """If logging the decision fails, the hold taken a moment before is given back."""
        guard, _ = make_guard()

        def explode(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
            if event.get("event") == "payout_guard.decision":
                raise RuntimeError("log sink down")
            return event

        old = structlog.get_config()
        structlog.configure(processors=[explode, structlog.testing.LogCapture()],
                            cache_logger_on_first_use=False)
        try:
            with pytest.raises(RuntimeError, match="log sink down"):
                guard.reserve("80.00", "BRL", payout_id="X")
        finally:
            structlog.configure(**old)
        assert (None, Decimal("0.00")) == (guard.hold("X"), guard.check("1", "BRL").reserved)


class TestLostHoldsDeny:
    def test_a_deleted_sqlite_file_denies_until_rearmed(self, tmp_path: Path) -> None:
        """The file nobody else sees any more is not carried on with: checks deny."""
        path = tmp_path / "holds.db"
        store = SqliteReservations(path)
        guard, _ = make_guard(reservations=store)
        guard.reserve("80.00", "BRL", payout_id="X")
        path.unlink()
        decision = guard.check("10.00", "BRL")
        assert (("balance_unavailable",), True) == (decision.codes, decision.retryable)
        assert "lost its holds" in decision.reasons[0].message
        with pytest.raises(PayoutDenied):
            guard.reserve("10.00", "BRL", payout_id="Y")
        store.rearm()
        assert guard.check("10.00", "BRL").allowed
        store.close()

    def test_a_replaced_sqlite_file_denies_too(self, tmp_path: Path) -> None:
        """Another file moved into the path is not the one the store was using."""
        path = tmp_path / "holds.db"
        store = SqliteReservations(path)
        guard, _ = make_guard(reservations=store)
        guard.reserve("80.00", "BRL", payout_id="X")
        SqliteReservations(tmp_path / "other.db").close()
        (tmp_path / "other.db").replace(path)
        assert ("balance_unavailable",) == guard.check("10.00", "BRL").codes
        store.close()

    def test_the_memory_store_cannot_lose_its_holds(self) -> None:
        """rearm() exists on every store; the memory store has nothing to re-arm."""
        store = InMemoryReservations()
        guard, _ = make_guard(reservations=store)
        guard.reserve("80.00", "BRL", payout_id="X")
        store.rearm()
        assert Decimal("80.00") == guard.check("1", "BRL").reserved

    def test_a_closed_guard_denies_and_forgets_no_payout_it_sent(self) -> None:
        """Closing (an app shutting down) never turns a sent payout id into a fresh one."""
        guard, _ = make_guard()
        sent: list[str] = []

        @guard.protect(payout_id="ref")
        def send(amount: str, currency: str, ref: str) -> None:
            sent.append(f"{ref} {amount} {currency}")

        send("80.00", "BRL", ref="X")
        guard.close()
        late = guard.check("10.00", "BRL")
        assert (("balance_unavailable",), True) == (late.codes, late.retryable)
        assert "closed" in late.reasons[0].message
        with pytest.raises(PayoutDenied):
            send("80.00", "BRL", ref="X")  # a late retry of the same job
        assert ["X 80.00 BRL"] == sent
        guard.reservations.rearm()
        assert ("duplicate_payout",) == guard.check("1", "BRL", payout_id="X").codes

    def test_a_closed_async_guard_denies_too(self) -> None:
        """The same after ``await guard.aclose()``; a reservation in flight cannot commit."""
        async def scenario() -> tuple[tuple[str, ...], type[BaseException] | None]:
            guard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}))
            in_flight = await guard.reserve("15.00", "BRL", payout_id="Y")
            await guard.aclose()
            try:
                await in_flight.commit()
            except StoreUnavailable as exc:
                failed: type[BaseException] | None = type(exc)
            else:
                failed = None
            return (await guard.check("10.00", "BRL")).codes, failed

        assert (("balance_unavailable",), StoreUnavailable) == asyncio.run(scenario())
