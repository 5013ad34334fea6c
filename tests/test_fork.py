"""Fetchers in forked workers: each child opens its own connections, so answers never cross.

A guard built before ``fork()`` (as a Celery tasks module does) holds a keep-alive connection
in its fetcher's pool. Children that kept using it would read each other's answers. Here eight
forked workers check 200 times each against one LuxCore emulator on 127.0.0.1, asking for
ARS and MXN in turn, and every answer must be the currency asked for.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from decimal import Decimal

import pytest
import requests

from guard import PayoutGuard
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.testing.emulators import LuxCoreEmulator

WORKERS = 8
CHECKS = 200
EXPECTED = {"ARS": Decimal("12000.00"), "MXN": Decimal("8500.00")}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def emulator() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator(balances={code: str(amount) for code, amount in EXPECTED.items()}) as emu:
        yield emu


def _work(guard: PayoutGuard, worker: int, checks: int) -> dict[str, object]:
    """Check *checks* times, alternating currencies; return what went wrong, if anything."""
    crossed, broken = 0, []
    for number in range(checks):
        currency = "ARS" if (number + worker) % 2 else "MXN"
        decision = guard.check("1.00", currency)
        if not decision.allowed or decision.balance is None:
            broken.append([r.message[:120] for r in decision.reasons])
        elif (decision.balance.currency, decision.balance.available) != (
            currency, EXPECTED[currency]
        ):
            crossed += 1
    return {"crossed": crossed, "broken": broken[:3], "broken_count": len(broken)}


def _fork_workers(guard: PayoutGuard, workers: int, checks: int) -> list[dict[str, object]]:
    """Fork *workers* children running _work; return each one's report."""
    children = []
    for worker in range(workers):
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns about fork() with threads (the emulator serves from one);
            # forking a process that holds a guard is exactly what is under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns to pytest
            os.close(read)
            try:
                report = _work(guard, worker, checks)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                report = {"crossed": -1, "broken": [repr(exc)], "broken_count": -1}
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    reports = []
    for pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        reports.append(json.loads(data or b'{"crossed": -1, "broken": ["no report"]}'))
    return reports


class TestForkedWorkers:
    def test_eight_forked_workers_never_read_each_others_answers(
        self, emulator: LuxCoreEmulator
    ) -> None:
        """8 workers x 200 checks, cache_ttl=0: every answer is the currency asked for."""
        fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url,
                                 retry=RetryPolicy(attempts=1, deadline=10.0))
        guard = PayoutGuard(fetcher, cache_ttl=0)
        assert guard.check("1.00", "ARS").allowed  # the parent's pool now holds a connection
        reports = _fork_workers(guard, WORKERS, CHECKS)
        assert [{"crossed": 0, "broken": [], "broken_count": 0}] * WORKERS == reports
        assert guard.check("1.00", "MXN").allowed  # and the parent's connection still works
        guard.close()

    def test_a_passed_in_session_is_repooled_in_the_child(
        self, emulator: LuxCoreEmulator
    ) -> None:
        """With the caller's session, children drop its pooled connections and still agree."""
        session = requests.Session()
        fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url, session=session,
                                 retry=RetryPolicy(attempts=1, deadline=10.0))
        guard = PayoutGuard(fetcher, cache_ttl=0)
        assert guard.check("1.00", "ARS").allowed
        reports = _fork_workers(guard, 4, 25)
        assert [{"crossed": 0, "broken": [], "broken_count": 0}] * 4 == reports
        session.close()
