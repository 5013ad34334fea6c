"""A fleet of payout worker processes on one provider key, shared by bench_fleet and test_fleet.

``run_fleet`` starts a ``LuxCoreEmulator`` in this process (rate limited like LuxCore,
withdrawals completing by themselves) and N worker processes (forked from a fork server, which
has no threads) that share one reservation
store. Each worker loops ``guard.reserve`` -> ``POST /api/v1/withdrawals`` -> commit, paced so
that the whole fleet asks for a fixed number of payouts a second whatever N is, and retries a
denied payout shortly after. What the emulator saw and what the workers did come back as a
``FleetRun``.

The guard options of the fleet issue (``share_balances``, ``refresh_after_commit`` on the guard,
``requests_per_minute`` on the fetcher) are passed only when this version of the guard has them;
``missing_options`` names those it lacks.
"""

from __future__ import annotations

import inspect
import json
import math
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import requests
import structlog

from guard import PayoutDenied, PayoutGuard, PayoutNotSent
from guard.fetchers import LuxCoreFetcher
from guard.testing.emulators import LuxCoreEmulator
from tests._store_workers import open_store, set_barrier, wait_for_start

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

__all__ = ["FleetPlan", "FleetRun", "fleet_worker", "guard_options", "run_fleet"]

# Workers fork from a server that imported this module once: spawning eight interpreters that
# each import the guard took 11 s on two cores, before a single payout.
FORKSERVER = multiprocessing.get_context("forkserver")
CURRENCY = "ARS"
DENIED_RETRY_SECONDS = 0.25
# Guard options the fleet issue adds, and where they go.
GUARD_OPTIONS = ("share_balances", "refresh_after_commit")
FETCHER_OPTIONS = ("requests_per_minute",)


@dataclass(frozen=True)
class FleetPlan:
    """What a fleet run does.

    Attributes:
        store: The store target (``open_store``): a SQLite path or ``redis://...#namespace``.
        workers: Worker processes.
        seconds: How long the workers pay out.
        cache_ttl: The guards' ``cache_ttl``.
        refresh_after_commit: The guards' ``refresh_after_commit`` (when the guard has it).
        funds: Available funds at the start, major units.
        payout: Each payout, major units.
        fleet_rate: Payouts the whole fleet asks for per second (each worker 1/N of it).
        provider_rpm: The emulator's ``requests_per_minute`` (LuxCore documents 100).
        complete_after: Seconds after which the emulator completes each withdrawal.
    """

    store: str
    workers: int
    seconds: float
    cache_ttl: float = 5.0
    refresh_after_commit: float | None = 1.0
    funds: str = "200000.00"
    payout: str = "1000.00"
    fleet_rate: float = 4.0
    provider_rpm: int = 100
    complete_after: float = 3.0


@dataclass
class WorkerReport:
    """What one worker did (picklable, returned from the worker process)."""

    paid_at: list[float] = field(default_factory=list)  # seconds after the start
    refused: list[str] = field(default_factory=list)  # withdrawals the provider refused
    denials: Counter[str] = field(default_factory=Counter)  # reason code -> denials
    errors: list[str] = field(default_factory=list)  # anything else raised


@dataclass(frozen=True)
class FleetRun:
    """What a fleet run measured.

    Attributes:
        plan: The plan it ran.
        balance_calls: Seconds after the start of each authenticated balance request.
        rate_limited: Balance requests the emulator answered 429.
        refused: Withdrawals the emulator refused (any reason), as the workers saw them.
        refused_for_funds: Withdrawals the emulator refused for insufficient funds.
        available: Available funds at the end, major units.
        frozen: Frozen funds at the end, major units.
        paid_at: Seconds after the start of each payout the provider accepted, sorted.
        denials: Reason code -> denials the workers received (retries included).
        errors: Exceptions the workers hit, other than denials.
        missing_options: Guard options of the fleet issue that this guard lacks.
    """

    plan: FleetPlan
    balance_calls: tuple[float, ...]
    rate_limited: int
    refused: tuple[str, ...]
    refused_for_funds: int
    available: Decimal
    frozen: Decimal
    paid_at: tuple[float, ...]
    denials: dict[str, int]
    errors: tuple[str, ...]
    missing_options: tuple[str, ...]

    @property
    def requests_per_minute(self) -> Decimal:
        """Return the balance requests sent per minute of the run."""
        per_minute = Decimal(len(self.balance_calls)) * 60 / Decimal(str(self.plan.seconds))
        return per_minute.quantize(Decimal("0.1"))

    @property
    def paid(self) -> Decimal:
        """Return what left available funds: the funds at the start minus available now."""
        return Decimal(self.plan.funds) - self.available

    @property
    def paid_share(self) -> Decimal:
        """Return the share of the funds paid out, 0 to 1."""
        return (self.paid / Decimal(self.plan.funds)).quantize(Decimal("0.001"))

    @property
    def halves(self) -> tuple[Decimal, Decimal]:
        """Return payouts per second in the first and in the second half of the run."""
        half = self.plan.seconds / 2
        first = sum(1 for at in self.paid_at if at < half)
        rate = Decimal(str(half))
        return (
            (Decimal(first) / rate).quantize(Decimal("0.01")),
            (Decimal(len(self.paid_at) - first) / rate).quantize(Decimal("0.01")),
        )

    @property
    def overspend(self) -> Decimal:
        """Return what the fleet tried to pay beyond the funds (0 when it never overspent).

        Withdrawals the provider refused for insufficient funds count at their amount; so
        does available below zero and paid beyond the funds (both impossible at the emulator,
        checked anyway).
        """
        refused = self.refused_for_funds * Decimal(self.plan.payout)
        accepted = Decimal(len(self.paid_at)) * Decimal(self.plan.payout)
        beyond = max(Decimal(0), accepted - Decimal(self.plan.funds), -self.available)
        return refused + beyond

    @property
    def request_target(self) -> int:
        """Return the issue's bound on balance requests for the run: ceil(s / ttl) + 2."""
        return math.ceil(self.plan.seconds / self.plan.cache_ttl) + 2


def guard_options(plan: FleetPlan) -> tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]:
    """Return (guard options, fetcher options, names missing) for this version of the guard."""
    guard_params = inspect.signature(PayoutGuard).parameters
    fetcher_params = inspect.signature(LuxCoreFetcher).parameters
    wanted_guard: dict[str, Any] = {
        "share_balances": True,
        "refresh_after_commit": plan.refresh_after_commit,
    }
    wanted_fetcher: dict[str, Any] = {"requests_per_minute": 90}  # the documented default
    guard_kwargs = {name: value for name, value in wanted_guard.items() if name in guard_params}
    fetcher_kwargs = {
        name: value for name, value in wanted_fetcher.items() if name in fetcher_params
    }
    missing = tuple(
        [f"PayoutGuard({name}=...)" for name in wanted_guard if name not in guard_params]
        + [f"LuxCoreFetcher({name}=...)" for name in wanted_fetcher if name not in fetcher_params]
    )
    return guard_kwargs, fetcher_kwargs, missing


def _quiet() -> None:
    # A worker process: its decisions are counted, not logged.
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
    )


def fleet_worker(plan: FleetPlan, index: int, url: str, api_key: str) -> WorkerReport:
    """Pay out through one guard until the run ends (runs in a worker process).

    Worker *index* of N asks for its payouts at ``index/rate``, ``(index+N)/rate``, ... after
    the start, so the fleet asks for ``fleet_rate`` payouts a second whatever N is. A denied
    payout is asked for again every ``DENIED_RETRY_SECONDS`` until it goes out or the run ends.

    Returns:
        What this worker paid, was refused, denied, and any errors.
    """
    _quiet()
    guard_kwargs, fetcher_kwargs, _ = guard_options(plan)
    fetcher = LuxCoreFetcher(api_key, base_url=url, **fetcher_kwargs)
    guard = PayoutGuard(
        fetcher, reservations=open_store(plan.store), cache_ttl=plan.cache_ttl, **guard_kwargs
    )
    report = WorkerReport()
    minor = plan.payout.replace(".", "")
    with guard, requests.Session() as session:

        def submit(payout_id: str) -> None:
            reply = session.post(
                f"{url}/api/v1/withdrawals",
                headers={"X-API-Key": api_key, "Content-Type": "application/json"},
                data=json.dumps(
                    {"amount": minor, "currency": CURRENCY, "merchant_reference": payout_id}
                ),
                timeout=10,
            )
            if reply.status_code != 201:
                report.refused.append(f"{payout_id} {reply.status_code} {reply.text}")
                raise PayoutNotSent(f"the provider refused {payout_id}")

        wait_for_start()
        start = time.time()
        deadline = start + plan.seconds
        due = start + index / plan.fleet_rate
        for number in range(1_000_000):
            if due >= deadline:
                break
            time.sleep(max(0.0, due - time.time()))
            payout_id = f"fleet-{index}-{number}"
            while time.time() < deadline:
                try:
                    with guard.reserve(plan.payout, CURRENCY, payout_id=payout_id):
                        submit(payout_id)
                    report.paid_at.append(time.time() - start)
                    break
                except PayoutDenied as exc:
                    report.denials.update(exc.decision.codes or ("(no code)",))
                    time.sleep(DENIED_RETRY_SECONDS)
                except PayoutNotSent:
                    break
                except Exception as exc:  # noqa: BLE001 - reported, so one bad call ends no run
                    report.errors.append(f"{payout_id}: {type(exc).__name__}: {exc}")
                    break
            due = max(due + plan.workers / plan.fleet_rate, time.time())
    return report


def run_fleet(plan: FleetPlan) -> FleetRun:
    """Run *plan*: the emulator here, the workers in forked processes; return what happened."""
    _, _, missing = guard_options(plan)
    emulator = LuxCoreEmulator(
        balances={CURRENCY: plan.funds},
        requests_per_minute=plan.provider_rpm,
        complete_after=plan.complete_after,
    )
    FORKSERVER.set_forkserver_preload([__name__])  # heeded when the server starts
    barrier: Barrier = FORKSERVER.Barrier(plan.workers + 1)
    with emulator, ProcessPoolExecutor(
        plan.workers, mp_context=FORKSERVER, initializer=set_barrier, initargs=(barrier,)
    ) as pool:
        futures = [
            pool.submit(fleet_worker, plan, index, emulator.url, emulator.api_key)
            for index in range(plan.workers)
        ]
        barrier.wait(timeout=120)
        start = time.time()
        reports = [future.result(timeout=plan.seconds + 120) for future in futures]
        available, frozen = emulator.funds(CURRENCY)
        calls = emulator.balance_calls
        refused_for_funds = emulator.refused_withdrawals
    denials: Counter[str] = Counter()
    for report in reports:
        denials.update(report.denials)
    return FleetRun(
        plan=plan,
        balance_calls=tuple(call.received_at - start for call in calls),
        rate_limited=sum(call.rate_limited for call in calls),
        refused=tuple(line for report in reports for line in report.refused),
        refused_for_funds=refused_for_funds,
        available=available,
        frozen=frozen,
        paid_at=tuple(sorted(at for report in reports for at in report.paid_at)),
        denials=dict(denials),
        errors=tuple(line for report in reports for line in report.errors),
        missing_options=missing,
    )
