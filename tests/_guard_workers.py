"""Code run in worker processes by tests/test_concurrency.py (kept light to import)."""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING

import requests
import structlog

from guard import PayoutDenied, PayoutGuard
from guard.fetchers import LuxCoreFetcher
from guard.testing import StaticFetcher
from rules import ReserveMargin
from tests._store_workers import open_store, set_barrier, wait_for_start

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event

__all__ = ["ARS_MARGIN", "CRASH_BALANCE", "crash_holder", "pay_through_luxcore", "set_barrier"]

ARS_MARGIN = "1000.00"
CRASH_BALANCE = {"BRL": "1000.00"}


class ProviderRefused(Exception):
    """The emulator refused a withdrawal the guard had allowed."""


def _quiet() -> None:
    # A worker process of the test run: its decisions are not what the test reads.
    structlog.configure(processors=[structlog.processors.KeyValueRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())


def pay_through_luxcore(
    target: str, url: str, api_key: str, worker: int, payouts: int
) -> dict[str, list[str]]:
    """Pay out ARS through a guard whose balance comes from the LuxCore emulator.

    Each allowed payout creates a withdrawal over HTTP inside the reservation, so the
    emulator's available falls as payouts commit.

    Returns:
        ``paid``: ``"<payout_id> <amount> <withdrawal id>"``; ``denied``: the reason codes of
        each denial (space-separated, empty if a denial had none); ``refused``: the provider's
        refusals of allowed payouts (should never happen).
    """
    _quiet()
    rng = random.Random(worker)
    store = open_store(target)
    fetcher = LuxCoreFetcher(api_key, base_url=url)
    guard = PayoutGuard(fetcher, [ReserveMargin(minimum={"ARS": ARS_MARGIN})],
                        reservations=store, cache_ttl=1.0)
    result: dict[str, list[str]] = {"paid": [], "denied": [], "refused": []}
    session = requests.Session()
    try:
        wait_for_start()
        for i in range(payouts):
            amount = f"{rng.randint(50, 600)}.{rng.randint(0, 99):02d}"
            payout_id = f"w{worker}-{i}"
            try:
                with guard.reserve(amount, "ARS", payout_id=payout_id):
                    reply = session.post(
                        f"{url}/api/v1/withdrawals",
                        headers={"X-API-Key": api_key, "Content-Type": "application/json"},
                        data=json.dumps({"amount": amount.replace(".", ""), "currency": "ARS",
                                         "merchant_reference": payout_id}),
                        timeout=10,
                    )
                    if reply.status_code != 201:
                        result["refused"].append(f"{payout_id} {reply.status_code} {reply.text}")
                        raise ProviderRefused(payout_id)
                    result["paid"].append(f"{payout_id} {amount} {reply.json()['id']}")
            except PayoutDenied as exc:
                result["denied"].append(" ".join(exc.decision.codes))
            except ProviderRefused:
                pass
    finally:
        session.close()
        fetcher.close()
        store.close()
    return result


def crash_holder(target: str, amount: str, ttl: float, held: Event) -> None:
    """Reserve *amount* through a guard, say so, then hang inside the reservation."""
    _quiet()
    store = open_store(target)
    guard = PayoutGuard(StaticFetcher(CRASH_BALANCE), reservations=store)
    with guard.reserve(amount, "BRL", payout_id="po_crash", ttl=ttl):
        held.set()
        time.sleep(600)
