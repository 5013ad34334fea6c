"""Measure how long an event loop stalls while guarded payouts wait for a slow provider.

Run: ``.venv/bin/python tests/benchmarks/bench_async_loop.py [--delay 2]`` (not part of the
test suite). A LuxCore emulator on loopback takes ``--delay`` seconds over every balance
answer. A 5 ms ticker on the loop records the longest gap between its ticks while:

1. ``PayoutGuard.check`` is called from 64 ``async def`` handlers (what services did before
   ``AsyncPayoutGuard``: the loop freezes for the whole fetch);
2. 64 ``await AsyncPayoutGuard.check(...)`` and 64 ``async with guard.reserve(...)`` wait for
   the same balance.

Then the wait of an unrelated ``asyncio.to_thread`` call while 64 guarded ``async def``
payouts wait for the balance: run through the loop's default executor (what ``protect`` did
before) and through the guard's own pool (what it does now).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from guard import AsyncPayoutGuard, PayoutGuard
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.testing.emulators import LuxCoreEmulator

TICK = 0.005


async def worst_gap(work: Callable[[], Awaitable[Any]]) -> float:
    """Return the longest gap (seconds) a 5 ms ticker saw while *work* ran on the loop."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(TICK * 2)
    await work()
    done.set()
    await ticking
    return max(gaps)


async def to_thread_wait(start_guarded: Callable[[], Coroutine[Any, Any, None]]) -> float:
    """Return how long an unrelated ``asyncio.to_thread`` waited beside guarded payouts."""
    guarded: asyncio.Task[None] = asyncio.create_task(start_guarded())
    await asyncio.sleep(0.2)  # the guarded payouts now hold their threads
    began = time.perf_counter()
    await asyncio.to_thread(lambda: None)
    waited = time.perf_counter() - began
    await guarded
    return waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=2.0, help="provider seconds per answer")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with LuxCoreEmulator(balances={"ARS": "1000000.00"}) as emulator:
        emulator.slow_seconds = args.delay

        def fetcher() -> LuxCoreFetcher:
            emulator.fail_next("slow", times=10_000)
            return LuxCoreFetcher(emulator.api_key, base_url=emulator.url,
                                  retry=RetryPolicy(attempts=1, deadline=args.delay + 10))

        blocking = PayoutGuard(fetcher())

        async def blocking_checks() -> None:
            async def handler() -> None:
                blocking.check("1.00", "ARS")  # the blocking call inside async def

            await asyncio.gather(*(handler() for _ in range(64)))

        before = asyncio.run(worst_gap(blocking_checks))

        async def awaited() -> None:
            async with AsyncPayoutGuard(fetcher(), max_workers=8) as guard:
                async def reserve(n: int) -> None:
                    async with guard.reserve("1.00", "ARS", payout_id=f"po_{n}"):
                        pass

                await asyncio.gather(*(guard.check("1.00", "ARS") for _ in range(64)),
                                     *(reserve(n) for n in range(64)))

        after = asyncio.run(worst_gap(awaited))

        old_protect = PayoutGuard(fetcher())
        new_protect = PayoutGuard(fetcher())

        @new_protect.protect()
        async def send(amount: str, currency: str) -> str:
            return amount + currency

        async def through_default_executor() -> None:
            await asyncio.gather(*(asyncio.to_thread(old_protect.check, "1.00", "ARS")
                                   for _ in range(64)))

        async def through_guard_pool() -> None:
            await asyncio.gather(*(send("1.00", "ARS") for _ in range(64)))

        default_wait = asyncio.run(to_thread_wait(through_default_executor))
        pool_wait = asyncio.run(to_thread_wait(through_guard_pool))

    print(f"provider answers after {args.delay:g} s; a 5 ms ticker's longest gap:")
    print(f"  PayoutGuard.check in 64 async handlers      {before * 1000:9.0f} ms")
    print(f"  AsyncPayoutGuard, 64 checks + 64 reserves   {after * 1000:9.0f} ms  "
          f"({after / before:.3f} of the blocking figure)")
    print("an unrelated asyncio.to_thread beside 64 guarded async def payouts waited:")
    print(f"  payouts in the loop's default executor      {default_wait * 1000:9.0f} ms")
    print(f"  payouts in the guard's own pool (protect)   {pool_wait * 1000:9.0f} ms")


if __name__ == "__main__":
    main()
