"""A FastAPI payout service guarded by ``AsyncPayoutGuard``: the pattern to copy.

``POST /payouts`` holds the funds, sends the withdrawal to LuxCore and commits the hold, all
without blocking the event loop: while one request waits for a slow provider, ``GET /ping``
and every other request keep being served. How each outcome maps to the hold:

- the provider accepted the withdrawal: the hold is committed (the ``async with`` ends);
- the provider refused it (HTTP 4xx): ``PayoutNotSent`` releases the hold;
- no answer (timeout, connection dropped): ``PayoutOutcomeUnknown`` keeps the hold as
  *uncertain*, so the money is not spent twice and the id is not sent again until someone
  calls ``guard.resolve(payout_id, sent=...)``;
- the guard denied it: HTTP 409 for a duplicate payout id, 422 otherwise, with the reasons.

Run it (``pip install fastapi uvicorn httpx``) against a configuration whose provider is
LuxCore, for example the emulator that ``payout-guard emulate`` starts::

    PAYOUT_GUARD_CONFIG=guard.toml uvicorn --factory examples.fastapi_app:app_from_env

(The test suite runs it in ``tests/test_fastapi_example.py``.)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from guard import AsyncPayoutGuard, PayoutDenied, PayoutNotSent, PayoutOutcomeUnknown
from rules.money import currency_exponent, quantize_exact, to_decimal


class PayoutIn(BaseModel):
    """A payout to send. The amount is a string: money never travels as a JSON float."""

    payout_id: str
    amount: str
    currency: str


Send = Callable[[PayoutIn], Awaitable[str]]


class LuxCoreWithdrawals:
    """Send withdrawals to LuxCore (``POST /api/v1/withdrawals``) with an async client.

    Args:
        base_url: The API's base URL.
        api_key: The ``X-API-Key`` credential.
        timeout: Seconds to wait for LuxCore's answer.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, headers={"X-API-Key": api_key},
                                         timeout=timeout)

    async def __call__(self, payout: PayoutIn) -> str:
        """Send *payout*; return LuxCore's withdrawal id.

        Raises:
            PayoutNotSent: LuxCore refused it (the money did not leave).
            PayoutOutcomeUnknown: no answer came back (it may have left).
        """
        amount = quantize_exact(to_decimal(payout.amount), payout.currency)
        minor = int(amount.scaleb(currency_exponent(payout.currency)))
        try:
            response = await self._client.post("/api/v1/withdrawals", json={
                "amount": str(minor), "currency": payout.currency,
                "merchant_reference": payout.payout_id,
            })
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise PayoutOutcomeUnknown(f"LuxCore did not answer: {type(exc).__name__}") from None
        if 400 <= response.status_code < 500:
            raise PayoutNotSent(f"LuxCore refused the withdrawal (HTTP {response.status_code})")
        if response.status_code >= 500:
            # A server error after the request arrived: it may or may not have been created.
            raise PayoutOutcomeUnknown(f"LuxCore answered HTTP {response.status_code}")
        withdrawal_id: str = response.json()["id"]
        return withdrawal_id

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def create_app(guard: AsyncPayoutGuard, send: Send) -> FastAPI:
    """Return the payout service: ``POST /payouts`` guarded by *guard*, and ``GET /ping``."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await guard.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/payouts")
    async def create_payout(payout: PayoutIn) -> dict[str, Any]:
        try:
            async with guard.reserve(payout.amount, payout.currency,
                                     payout_id=payout.payout_id) as reservation:
                withdrawal_id = await send(payout)
        except PayoutDenied as denied:
            decision = denied.decision
            status = 409 if "duplicate_payout" in decision.codes else 422
            raise HTTPException(status, detail={
                "codes": list(decision.codes), "retryable": decision.retryable,
                "max_payable": str(decision.max_payable), "explain": decision.explain(),
            }) from None
        except PayoutNotSent as refused:
            raise HTTPException(502, detail={"sent": False, "why": str(refused)}) from None
        except PayoutOutcomeUnknown as unknown:
            raise HTTPException(504, detail={"sent": "unknown", "why": str(unknown)}) from None
        return {"payout_id": payout.payout_id, "withdrawal_id": withdrawal_id,
                "state": reservation.state}

    return app


def app_from_env() -> FastAPI:
    """Build the service from the configuration named by ``PAYOUT_GUARD_CONFIG`` (uvicorn)."""
    config = os.environ["PAYOUT_GUARD_CONFIG"]
    guard = AsyncPayoutGuard.from_config(config)
    send = LuxCoreWithdrawals(os.environ["LUXCORE_BASE_URL"], os.environ["LUXCORE_API_KEY"])
    return create_app(guard, send)
