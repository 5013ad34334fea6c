"""Hold the funds and record the payout in ONE PostgreSQL transaction (the outbox pattern).

``guard.reserve(..., connection=conn)`` writes the hold through your open connection, inside
your transaction: the hold and your ``payouts`` row commit together or roll back together, so
a crash between "hold the funds" and "record the payout" cannot happen. An outbox worker then
sends the recorded payouts to the provider.

The reservation is committed inside the same transaction: once the row is in the outbox the
payout will go out, so its hold counts as sent. Choose ``settle_lag`` longer than your outbox
takes to send, so the hold counts until the provider's balance can show the payout.

Run: ``PAYOUT_GUARD_PG_DSN=postgresql://user:password@host/db python examples/postgres_outbox.py``
(it works in a schema of its own, ``payout_guard_demo``, which it drops and creates again).
"""

from __future__ import annotations

import logging
import os
from decimal import Decimal

import psycopg
import structlog

from guard import PayoutDenied, PayoutGuard
from guard.stores import PostgresReservations
from guard.testing import StaticFetcher

DEMO = "payout_guard_demo"


class CrashBeforeCommit(Exception):
    """Stands for anything that goes wrong before the transaction commits."""


def record_payout(
    guard: PayoutGuard, conn: psycopg.Connection, payout_id: str, amount: str, *,
    crash: bool = False,
) -> None:
    """Hold *amount* BRL and insert the payout row, in one transaction on *conn*."""
    with conn.transaction():
        with guard.reserve(amount, "BRL", payout_id=payout_id, connection=conn):
            conn.execute(
                f"INSERT INTO {DEMO}.payouts (id, amount, currency) VALUES (%s, %s, 'BRL')",
                (payout_id, Decimal(amount)),
            )
        if crash:
            raise CrashBeforeCommit(payout_id)


def show(guard: PayoutGuard, conn: psycopg.Connection, payout_id: str) -> None:
    """Print what the store and the payouts table hold for *payout_id*."""
    hold = guard.hold(payout_id)
    row = conn.execute(f"SELECT amount FROM {DEMO}.payouts WHERE id = %s",
                       (payout_id,)).fetchone()
    print(f"{payout_id}: hold={hold.state if hold else None} payout_row={row is not None}")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    dsn = os.environ["PAYOUT_GUARD_PG_DSN"]
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute(f"DROP SCHEMA IF EXISTS {DEMO} CASCADE")
    # create_schema=True is for demos and tests; in production run
    # `payout-guard store migrate --config FILE` once per deployment instead.
    store = PostgresReservations(dsn, schema=DEMO, create_schema=True)
    guard = PayoutGuard(StaticFetcher({"BRL": "1000.00"}), reservations=store)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {DEMO}.payouts (id text PRIMARY KEY, amount numeric "
                     f"NOT NULL, currency text NOT NULL)")
        conn.commit()

        record_payout(guard, conn, "po_1", "600.00")
        show(guard, conn, "po_1")  # committed together: both are there

        try:
            record_payout(guard, conn, "po_2", "300.00", crash=True)
        except CrashBeforeCommit:
            print("po_2: crashed before COMMIT, the transaction rolled back")
        show(guard, conn, "po_2")  # rolled back together: neither is there

        try:
            record_payout(guard, conn, "po_3", "500.00")
        except PayoutDenied as denied:
            print(f"po_3 denied: {', '.join(r.code for r in denied.decision.reasons)}")
        show(guard, conn, "po_3")
    guard.close()


if __name__ == "__main__":
    main()
