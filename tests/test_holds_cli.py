"""Seeing and fixing holds: ``list_holds``, the ``payout-guard holds`` command, hold events.

The command runs in a subprocess (it configures structlog for its process) against SQLite and
a real redis-server.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from guard import (
    AsyncPayoutGuard,
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutGuard,
)
from guard.stores import (
    Hold,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
    balance_key,
)
from guard.testing import StaticFetcher
from tests._cli import run_cli
from tests._guard_strategies import FakeClock
from tests._redis_server import free_port

LUX_BRL = balance_key("luxcore", None, "BRL")
LUX_ARS = balance_key("luxcore", "shop-2", "ARS")


def _take(store: ReservationStore, payout_id: str, amount: str, *, key: str = LUX_BRL,
          currency: str = "BRL", ttl: float = 300.0, at: float | None = None) -> Hold:
    """Hold *amount* for *payout_id* at *at* (default now) for *ttl* s; return it with its owner."""
    now = time.time() if at is None else at
    hold = Hold(payout_id=payout_id, key=key, currency=currency, amount=Decimal(amount),
                fee=Decimal(0), state="pending", created_at=now, expires_at=now + ttl,
                owner=f"owner-{payout_id}")
    outcome = store.try_hold(hold, ceiling=Decimal(10**9), counted_since=now - 60, now=now)
    assert "held" == outcome.status
    return hold


def _fill(store: ReservationStore) -> None:
    """Hold po_pending, po_sent (committed), po_unknown (uncertain) and po_ars, in that order."""
    base = time.time()
    _take(store, "po_pending", "10.00", at=base - 4)
    _take(store, "po_sent", "20.00", at=base - 3)
    store.commit("po_sent", owner="owner-po_sent", now=base - 3)
    _take(store, "po_unknown", "30.00", at=base - 2)
    store.mark_uncertain("po_unknown", owner="owner-po_unknown", now=base - 2, until=base + 600)
    _take(store, "po_ars", "1500", key=LUX_ARS, currency="ARS", at=base - 1)


# -- the holds command, against the store a configuration names ---------------------------


class Setup:
    """A configuration file and a store object on the same holds (SQLite or Redis)."""

    def __init__(self, config: Path, store: ReservationStore) -> None:
        self.config = config
        self.store = store

    def run(self, *args: str, logs: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``payout-guard holds ARGS --config FILE`` (JSON log lines on stderr if *logs*)."""
        first = ("--log-format", "json", "--log-level", "debug") if logs else ()
        return run_cli(*first, "holds", *args, "--config", str(self.config))

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert 0 == result.returncode, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(params=["sqlite", "redis"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """Yield a configuration over luxcore and pagsmile (no credentials set) and its store."""
    providers = (
        '[providers.luxcore]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "UNSET_KEY"\n'
        '[providers.pagsmile]\nbase_url = "http://127.0.0.1:9"\n'
        'app_id_env = "UNSET_ID"\nsecurity_key_env = "UNSET_SECRET"\n'
    )
    store: ReservationStore
    if request.param == "sqlite":
        path = tmp_path / "holds.db"
        section = f'[reservations]\nstore = "sqlite"\npath = "{path}"\n'
        store = SqliteReservations(path)
    else:
        url = request.getfixturevalue("redis_url")
        namespace = f"cli-{uuid.uuid4().hex}"
        section = (f'[reservations]\nstore = "redis"\nurl = "{url}"\n'
                   f'namespace = "{namespace}"\n')
        store = RedisReservations(url, namespace=namespace)
    config = tmp_path / "guard.toml"
    config.write_text(providers + section, encoding="utf-8")
    try:
        yield Setup(config, store)
    finally:
        store.close()


class TestHoldsList:
    def test_every_key_newest_first_as_a_table(self, setup: Setup) -> None:
        """`holds list` shows every hold across keys, newest first, and exits 0."""
        _fill(setup.store)
        result = setup.run("list")
        assert 0 == result.returncode, result.stderr
        order = [result.stdout.index(i) for i in ("po_ars", "po_unknown", "po_sent",
                                                   "po_pending")]
        assert sorted(order) == order
        assert "resolve it" in result.stdout  # the uncertain hold says what to do

    def test_json_is_exact_and_has_no_owner(self, setup: Setup) -> None:
        """--json lists the holds with amounts as strings and no owner token."""
        _fill(setup.store)
        listed = setup.json("list")
        assert ["po_ars", "po_unknown", "po_sent", "po_pending"] == [
            h["payout_id"] for h in listed
        ]
        ars = listed[0]
        assert ("pending", "luxcore", "shop-2", "ARS", "1500.00", "1500.00") == (
            ars["state"], ars["provider"], ars["account"], ars["currency"], ars["amount"],
            ars["held"],
        )
        assert "owner" not in json.dumps(listed)

    @pytest.mark.parametrize(("args", "expected"), [
        (("--state", "uncertain"), ["po_unknown"]),
        (("--state", "committed"), ["po_sent"]),
        (("--currency", "ars"), ["po_ars"]),
        (("--provider", "pagsmile"), []),
        (("--limit", "2"), ["po_ars", "po_unknown"]),
    ])
    def test_filters(self, setup: Setup, args: tuple[str, ...], expected: list[str]) -> None:
        """--state, --currency, --provider and --limit narrow the list."""
        _fill(setup.store)
        assert expected == [h["payout_id"] for h in setup.json("list", *args)]

    def test_an_expired_pending_hold_is_not_listed(self, setup: Setup) -> None:
        """A pending hold past its ttl no longer holds anything: it is not listed."""
        _take(setup.store, "po_gone", "10.00", ttl=0.2)
        time.sleep(0.3)  # Redis times holds on its own clock: the ttl really passes
        assert [] == setup.json("list")

    @pytest.mark.parametrize(("args", "message"), [
        (("--state", "expired"), "--state"),
        (("--limit", "0"), "--limit"),
        (("--currency", "XYZ"), "XYZ"),
        (("--provider", "luxcor"), "luxcore"),
    ])
    def test_bad_options_exit_2(self, setup: Setup, args: tuple[str, ...], message: str) -> None:
        """An unknown state, limit, currency or provider is a usage error, exit code 2."""
        result = setup.run("list", *args)
        assert 2 == result.returncode
        assert message in result.stderr


class TestHoldsShow:
    def test_shows_one_hold(self, setup: Setup) -> None:
        """`holds show ID --json` prints that hold."""
        _fill(setup.store)
        shown = setup.json("show", "po_sent")
        assert ("committed", "20.00") == (shown["state"], shown["held"])
        assert shown["committed_at"] is not None

    def test_unknown_id_exits_1(self, setup: Setup) -> None:
        """An id the store has no hold for exits 1, saying so."""
        result = setup.run("show", "po_nobody")
        assert 1 == result.returncode
        assert "no hold is recorded" in result.stderr


class TestHoldsRelease:
    def test_releases_a_pending_hold(self, setup: Setup) -> None:
        """`holds release ID` drops a stuck pending hold without its owner token."""
        _fill(setup.store)
        result = setup.run("release", "po_pending", "--json", logs=True)
        assert 0 == result.returncode, result.stderr
        assert "10.00" == json.loads(result.stdout)["released"]["held"]
        assert setup.store.get("po_pending") is None
        events = [json.loads(line) for line in result.stderr.splitlines()]
        assert [("released", "operator", "po_pending", "warning")] == [
            (e["change"], e["by"], e["payout_id"], e["level"]) for e in events
            if e["event"] == "payout_guard.hold"
        ]

    @pytest.mark.parametrize(("payout_id", "message"), [
        ("po_sent", "committed"), ("po_unknown", "resolve"), ("po_nobody", "no hold"),
    ])
    def test_refuses_what_is_not_pending(
        self, setup: Setup, payout_id: str, message: str
    ) -> None:
        """A committed hold is never released, an uncertain one is resolved: both exit 1."""
        _fill(setup.store)
        result = setup.run("release", payout_id)
        assert 1 == result.returncode
        assert message in result.stderr
        assert (setup.store.get(payout_id) is None) == (payout_id == "po_nobody")


class TestHoldsResolve:
    def test_sent_commits_the_uncertain_hold(self, setup: Setup) -> None:
        """--sent makes the uncertain hold committed."""
        _fill(setup.store)
        resolved = setup.json("resolve", "po_unknown", "--sent")
        assert "committed" == resolved["hold"]["state"]
        found = setup.store.get("po_unknown")
        assert found is not None
        assert "committed" == found.state

    def test_not_sent_releases_it(self, setup: Setup) -> None:
        """--not-sent drops the uncertain hold."""
        _fill(setup.store)
        result = setup.run("resolve", "po_unknown", "--not-sent")
        assert 0 == result.returncode, result.stderr
        assert setup.store.get("po_unknown") is None

    def test_a_pending_hold_is_refused(self, setup: Setup) -> None:
        """Only an uncertain hold is resolved: a pending one exits 1."""
        _fill(setup.store)
        result = setup.run("resolve", "po_pending", "--sent")
        assert 1 == result.returncode
        assert "not uncertain" in result.stderr

    def test_needs_sent_or_not_sent(self, setup: Setup) -> None:
        """Without --sent or --not-sent the command is a usage error."""
        result = setup.run("resolve", "po_unknown")
        assert 2 == result.returncode
        assert "--sent or --not-sent" in result.stderr


class TestHoldsRearm:
    def test_rearm_exits_0(self, setup: Setup) -> None:
        """`holds rearm` on a store that lost nothing changes nothing."""
        _fill(setup.store)
        result = setup.run("rearm")
        assert 0 == result.returncode, result.stderr
        assert 4 == len(setup.json("list"))


def test_a_store_that_does_not_answer_exits_3(tmp_path: Path) -> None:
    """A Redis nobody listens on is exit code 3, as a provider outage is for `check`."""
    config = tmp_path / "guard.toml"
    config.write_text(
        '[providers.luxcore]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "UNSET"\n'
        f'[reservations]\nstore = "redis"\nurl = "redis://127.0.0.1:{free_port()}/0"\n'
        'timeout = 1\n',
        encoding="utf-8",
    )
    result = run_cli("holds", "list", "-c", str(config))
    assert 3 == result.returncode, result.stderr
    assert "redis" in result.stderr.lower()


def test_ids_are_shown_as_written(tmp_path: Path) -> None:
    """A payout id that looks like rich markup is printed as it is, not styled away."""
    path = tmp_path / "holds.db"
    config = tmp_path / "guard.toml"
    config.write_text(
        '[providers.luxcore]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "UNSET"\n'
        f'[reservations]\nstore = "sqlite"\npath = "{path}"\n', encoding="utf-8",
    )
    with SqliteReservations(path) as store:
        _take(store, "po_[bold]1", "10.00")
    result = run_cli("holds", "list", "-c", str(config))
    assert 0 == result.returncode, result.stderr
    assert "po_[bold]1" in result.stdout
    refused = run_cli("holds", "resolve", "po_[bold]1", "--sent", "-c", str(config))
    assert 1 == refused.returncode
    assert "po_[bold]1" in refused.stderr


def test_a_relative_store_path_is_taken_from_the_config_directory(tmp_path: Path) -> None:
    """`holds list -c etc/guard.toml` run elsewhere reads etc/holds.db, as guards do."""
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    (etc / "guard.toml").write_text(
        '[providers.luxcore]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "UNSET"\n'
        '[reservations]\nstore = "sqlite"\npath = "holds.db"\n', encoding="utf-8",
    )
    with SqliteReservations(etc / "holds.db") as store:
        _take(store, "po_in_etc", "10.00")
    result = run_cli("holds", "list", "-c", str(etc / "guard.toml"), cwd=elsewhere)
    assert 0 == result.returncode, result.stderr
    assert "po_in_etc" in result.stdout
    assert [] == list(elsewhere.iterdir())


def test_rearm_rebuilds_a_lost_redis_ledger(redis_url: str, tmp_path: Path) -> None:
    """A Redis key whose ledger was evicted is listed again after `holds rearm`."""
    namespace = f"cli-{uuid.uuid4().hex}"
    config = tmp_path / "guard.toml"
    config.write_text(
        '[providers.luxcore]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "UNSET"\n'
        f'[reservations]\nstore = "redis"\nurl = "{redis_url}"\nnamespace = "{namespace}"\n',
        encoding="utf-8",
    )
    with RedisReservations(redis_url, namespace=namespace) as store:
        _take(store, "po_1", "10.00")
        with redis.Redis.from_url(redis_url) as client:
            client.delete(f"{{{namespace}}}:t:{LUX_BRL}")

        def listed() -> list[str]:
            result = run_cli("holds", "list", "--json", "-c", str(config))
            assert 0 == result.returncode, result.stderr
            return [h["payout_id"] for h in json.loads(result.stdout)]

        assert [] == listed()
        result = run_cli("holds", "rearm", "-c", str(config))
        assert 0 == result.returncode, result.stderr
        assert ["po_1"] == listed()
        assert Decimal("10.00") == store.reserved(LUX_BRL, counted_since=0, now=time.time())


# -- list_holds and release_hold on the guards -------------------------------------------


def _guard(**options: Any) -> tuple[PayoutGuard, FakeClock]:
    clock = FakeClock()
    fetcher = StaticFetcher({"BRL": "1000.00", "ARS": "100000.00"}, clock=clock)
    return PayoutGuard(fetcher, clock=clock, **options), clock


class TestGuardListHolds:
    def test_lists_what_reserve_holds(self) -> None:
        """list_holds shows the reservations' holds, newest first, filtered on request."""
        guard, clock = _guard()
        guard.reserve("100", "BRL", payout_id="po_1")
        clock.advance(1)
        sent = guard.reserve("50", "ARS", payout_id="po_2")
        sent.commit()
        assert ["po_2", "po_1"] == [h.payout_id for h in guard.list_holds()]
        assert ["po_1"] == [h.payout_id for h in guard.list_holds(state="pending")]
        assert ["po_2"] == [h.payout_id for h in guard.list_holds(currency="ars")]
        assert {""} == {h.owner for h in guard.list_holds()}

    @pytest.mark.parametrize(("options", "error"), [
        ({"state": "expired"}, InvalidPayoutRequest),
        ({"limit": 0}, InvalidPayoutRequest),
        ({"limit": 10_001}, InvalidPayoutRequest),
        ({"currency": "XYZ"}, InvalidPayoutRequest),
        ({"provider": "nobody"}, ConfigurationError),
    ])
    def test_bad_filters_are_refused(
        self, options: dict[str, Any], error: type[Exception]
    ) -> None:
        """A bad state, limit or currency is refused; so is a provider not the guard's."""
        guard, _ = _guard()
        with pytest.raises(error):
            guard.list_holds(**options)

    def test_release_hold_frees_the_funds(self) -> None:
        """release_hold drops a pending hold: its funds are spendable again."""
        guard, _ = _guard()
        guard.reserve("900", "BRL", payout_id="po_stuck")
        assert not guard.check("200", "BRL").allowed
        assert Decimal("900.00") == guard.release_hold("po_stuck").amount
        assert guard.check("200", "BRL").allowed

    def test_release_hold_refuses_a_committed_hold(self) -> None:
        """A committed hold is never released by an operator."""
        guard, _ = _guard()
        guard.reserve("10", "BRL", payout_id="po_1").commit()
        with pytest.raises(GuardError, match="committed"):
            guard.release_hold("po_1")

    def test_async_guard_lists_and_releases(self) -> None:
        """AsyncPayoutGuard awaits the same list_holds and release_hold."""
        clock = FakeClock()

        async def scenario() -> tuple[list[str], str, list[str]]:
            guard = AsyncPayoutGuard(StaticFetcher({"BRL": "1000.00"}, clock=clock),
                                     clock=clock)
            reservation = await guard.reserve("10", "BRL", payout_id="po_1")
            listed = [h.payout_id for h in await guard.list_holds()]
            released = (await guard.release_hold("po_1")).payout_id
            after = [h.payout_id for h in await guard.list_holds()]
            await reservation.release()
            await guard.aclose()
            return listed, released, after

        assert (["po_1"], "po_1", []) == asyncio.run(scenario())


class TestExpiredEvent:
    def test_a_reservation_ending_after_its_ttl_logs_expired(self) -> None:
        """A payout committed after its hold's ttl logs change="expired" once, then committed."""
        guard, clock = _guard(hold_ttl=30.0)
        reservation = guard.reserve("10", "BRL", payout_id="po_slow")
        clock.advance(45)
        with capture_logs() as logs:
            reservation.commit()
        changes = [(e["change"], e.get("late_by")) for e in logs
                   if e["event"] == "payout_guard.hold"]
        assert [("expired", 15.0), ("committed", None)] == changes
        assert "warning" == next(e["log_level"] for e in logs if e.get("change") == "expired")

    def test_in_time_logs_no_expiry(self) -> None:
        """A payout released within its ttl logs no expiry."""
        guard, clock = _guard(hold_ttl=30.0)
        reservation = guard.reserve("10", "BRL", payout_id="po_fast")
        clock.advance(10)
        with capture_logs() as logs:
            reservation.release()
        assert ["released"] == [e["change"] for e in logs if e["event"] == "payout_guard.hold"]

    def test_a_reserve_over_an_expired_hold_logs_it(self) -> None:
        """Reserving a payout id whose pending hold expired logs that hold as expired."""
        guard, clock = _guard(hold_ttl=30.0)
        guard.reserve("10", "BRL", payout_id="po_retry")  # its worker never ends it
        clock.advance(60)
        with capture_logs() as logs:
            guard.reserve("10", "BRL", payout_id="po_retry")
        assert [("expired", "reserve", "10.00")] == [
            (e["change"], e["noticed_by"], e["amount"]) for e in logs
            if e["event"] == "payout_guard.hold" and e["log_level"] == "warning"
        ]
