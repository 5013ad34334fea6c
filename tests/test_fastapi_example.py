"""examples/fastapi_app.py: a payout service on AsyncPayoutGuard, through httpx's ASGI transport.

The provider is a real LuxCore emulator on loopback; its balance answer is made slow, and the
service must keep answering ``/ping`` meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.fastapi_app import LuxCoreWithdrawals, create_app
from guard import AsyncPayoutGuard
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.testing.emulators import LuxCoreEmulator


@pytest.fixture
def luxcore() -> Iterator[LuxCoreEmulator]:
    """Yield a LuxCore emulator holding 100.00 ARS whose next balance answer takes 1 s."""
    with LuxCoreEmulator(balances={"ARS": "100.00"}) as emulator:
        emulator.slow_seconds = 1.0
        emulator.fail_next("slow")
        yield emulator


def make_client(luxcore: LuxCoreEmulator) -> httpx.AsyncClient:
    """Return an httpx client talking to the example app in process (no server, no port)."""
    fetcher = LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url,
                             retry=RetryPolicy(attempts=1, deadline=10))
    app = create_app(AsyncPayoutGuard(fetcher, cache_ttl=0),
                     LuxCoreWithdrawals(luxcore.url, luxcore.api_key))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


class TestPayoutService:
    def test_ping_answers_while_a_payout_waits_for_a_slow_provider(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """The payout takes the provider's 1 s; /ping meanwhile answers at once."""
        async def scenario() -> tuple[float, int, dict[str, str]]:
            async with make_client(luxcore) as client:
                start = time.perf_counter()
                payout = asyncio.create_task(client.post("/payouts", json={
                    "payout_id": "po_1", "amount": "80.00", "currency": "ARS"}))
                await asyncio.sleep(0.1)  # the payout is now waiting for the balance
                ping = await client.get("/ping")
                pinged = time.perf_counter() - start
                assert 200 == ping.status_code
                response = await payout
                return pinged, response.status_code, response.json()

        pinged, status, body = asyncio.run(scenario())
        assert (200, "committed", "pending") == (
            status, body["state"], luxcore.withdrawal_status(body["withdrawal_id"]))
        assert pinged < 0.9, f"/ping waited {pinged:.2f} s behind the payout"

    def test_a_retried_payout_is_a_409_and_is_not_sent_twice(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """The same payout id again: 409 duplicate_payout, no second withdrawal."""
        async def scenario() -> tuple[int, int, list[str]]:
            async with make_client(luxcore) as client:
                body = {"payout_id": "po_1", "amount": "80.00", "currency": "ARS"}
                first = await client.post("/payouts", json=body)
                again = await client.post("/payouts", json=body)
                return first.status_code, again.status_code, again.json()["detail"]["codes"]

        assert (200, 409, ["duplicate_payout"]) == asyncio.run(scenario())
        assert "pending" == luxcore.withdrawal_status("wd_000001")

    def test_a_payout_beyond_the_balance_is_a_422_with_reasons(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """Denied by the rules: 422 with the codes and what could be paid now."""
        async def scenario() -> dict[str, Any]:
            async with make_client(luxcore) as client:
                response = await client.post("/payouts", json={
                    "payout_id": "po_9", "amount": "150.00", "currency": "ARS"})
                assert 422 == response.status_code
                detail: dict[str, Any] = response.json()["detail"]
                return detail

        detail = asyncio.run(scenario())
        assert (["insufficient_funds"], "100.00") == (detail["codes"], detail["max_payable"])
