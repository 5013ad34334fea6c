"""The ``payout-guard demo`` scenarios: real fetchers against the three emulators.

The demo starts the Luxtak, LuxCore and Pagsmile emulators on 127.0.0.1 with sample balances,
puts their test credentials in environment variables of this process, loads the built-in TOML
configuration below (which names those variables, as a user's file would) and runs one payout
per scenario through guards built by ``PayoutGuard.from_config``: one pinned to each provider,
and one over all three that routes each payout to a provider that can pay it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from guard._config import load_text
from guard._config_build import build_reservations
from guard._config_schema import GuardConfig
from guard._models import Decision
from guard._sync import PayoutGuard
from guard.errors import PayoutDenied
from guard.testing.emulators import Fault, LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator

__all__ = ["DEMO_CONFIG", "DemoResult", "demo_config_text", "run_demo"]

DEMO_CONFIG = """\
# payout-guard's built-in demo configuration: three emulated providers on 127.0.0.1.
# Credentials are read from the environment variables named below (the demo sets them).
mode = "enforce"
default_provider = "luxcore"

[cache]
ttl = 0    # fetch on every check, so each scenario sees the provider's current balance

[reservations]
store = "memory"
settle_lag = 30
hold_ttl = 300

[providers.luxtak]
base_url = "{luxtak}"
app_id_env = "PAYOUT_GUARD_DEMO_LUXTAK_APP_ID"
app_key_env = "PAYOUT_GUARD_DEMO_LUXTAK_APP_KEY"
retry = {{ attempts = 2, deadline = 5, backoff = 0.05, max_backoff = 0.1 }}

[providers.luxcore]
base_url = "{luxcore}"
api_key_env = "PAYOUT_GUARD_DEMO_LUXCORE_API_KEY"

[providers.pagsmile]
base_url = "{pagsmile}"
app_id_env = "PAYOUT_GUARD_DEMO_PAGSMILE_APP_ID"
security_key_env = "PAYOUT_GUARD_DEMO_PAGSMILE_SECURITY_KEY"

[routing]
policy = "priority"
BRL = ["luxtak", "pagsmile"]    # Pix payouts: Luxtak first, Pagsmile where the payin funds sit

[[rules]]
type = "max_payout"
provider = "luxtak"
limits = {{ BRL = "5000.00" }}

[[rules]]
type = "reserve_margin"
currency = "BRL"
minimum = {{ BRL = "2000.00" }}

[[rules]]
type = "frozen_funds"
max_ratio = "0.5"

[[rules]]
type = "currency_minimums"
min_payout = {{ BRL = "10.00", ARS = "100.00" }}

[[rules]]
type = "max_payout"
limits = {{ ARS = "10000.00" }}

[[rules]]
type = "max_balance_age"
seconds = 60
"""


@dataclass(frozen=True, slots=True)
class DemoResult:
    """One scenario: what it shows, the reason code it expects, and the decision made."""

    title: str
    expected: str
    decision: Decision


def demo_config_text(luxtak: str = "http://127.0.0.1:8001", luxcore: str = "http://127.0.0.1:8002",
                     pagsmile: str = "http://127.0.0.1:8003") -> str:
    """Return the demo configuration (TOML) pointing at the given emulator URLs."""
    return DEMO_CONFIG.format(luxtak=luxtak, luxcore=luxcore, pagsmile=pagsmile)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set *values* in this process's environment for the block, then restore."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _concurrent(guard: PayoutGuard, amount: str, currency: str) -> list[Decision]:
    """Reserve two payouts at once; return the decisions, the one that got the funds first."""
    barrier = threading.Barrier(2)
    decisions: dict[str, Decision] = {}

    def pay(payout_id: str) -> None:
        barrier.wait()
        try:
            decisions[payout_id] = guard.reserve(amount, currency, payout_id=payout_id).decision
        except PayoutDenied as denied:
            decisions[payout_id] = denied.decision

    threads = [threading.Thread(target=pay, args=(f"demo-po-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(decisions.values(), key=lambda d: (not d.allowed, d.payout_id or ""))


def _scenarios(config: GuardConfig, luxtak: LuxtakEmulator) -> list[DemoResult]:
    store = build_reservations(config)
    guards = {name: PayoutGuard.from_config(config, provider=name, reservations=store)
              for name in config.provider_names}
    routed = PayoutGuard.from_config(config, reservations=store)
    try:
        results = [
            DemoResult("payout within the funds", "allowed",
                       guards["luxcore"].check("2500.00", "ARS")),
            DemoResult("would eat the BRL reserve", "reserve_margin",
                       guards["pagsmile"].check("71000.00", "BRL")),
            DemoResult("routed past Luxtak's limit", "allowed",
                       routed.check("15000.00", "BRL")),
            DemoResult("60% of MXN funds frozen", "frozen_funds",
                       guards["luxcore"].check("100.00", "MXN")),
            DemoResult("below the BRL minimum payout", "below_minimum_payout",
                       guards["pagsmile"].check("5.00", "BRL")),
        ]
        luxtak.fail_next(Fault.HTTP_503, times=2)
        results.append(DemoResult("provider outage fails closed", "balance_unavailable",
                                  guards["luxtak"].check("100.00", "USD")))
        first, second = _concurrent(guards["luxcore"], "7000.00", "ARS")
        results.append(DemoResult("concurrent payout 1 holds its funds", "allowed", first))
        results.append(DemoResult("concurrent payout 2 is held back", "insufficient_funds",
                                  second))
        return results
    finally:
        for guard in (*guards.values(), routed):
            for fetcher in guard.fetchers.values():
                close = getattr(fetcher, "close", None)
                if callable(close):
                    close()
        store.close()


def run_demo() -> list[DemoResult]:
    """Start the emulators, build guards from the demo configuration and run every scenario.

    Returns:
        One result per scenario, in order.

    Raises:
        ConfigurationError: never with the built-in configuration (it would be a bug).
    """
    with ExitStack() as stack:
        luxtak = stack.enter_context(
            LuxtakEmulator(balances={"BRL": "20000.00", "USD": "551.38"})
        )
        luxcore = stack.enter_context(LuxCoreEmulator())
        luxcore.set_balance("ARS", available="12000.00", frozen="3000.00")
        luxcore.set_balance("MXN", available="400.00", frozen="600.00")
        pagsmile = stack.enter_context(PagsmileEmulator(balances={"BRL": "72500.00"}))
        stack.enter_context(_environment({
            "PAYOUT_GUARD_DEMO_LUXTAK_APP_ID": luxtak.app_id,
            "PAYOUT_GUARD_DEMO_LUXTAK_APP_KEY": luxtak.app_key,
            "PAYOUT_GUARD_DEMO_LUXCORE_API_KEY": luxcore.api_key,
            "PAYOUT_GUARD_DEMO_PAGSMILE_APP_ID": pagsmile.app_id,
            "PAYOUT_GUARD_DEMO_PAGSMILE_SECURITY_KEY": pagsmile.security_key,
        }))
        text = demo_config_text(luxtak.url, luxcore.url, pagsmile.url)
        config = load_text(text, "toml", source="<built-in demo configuration>")
        return _scenarios(config, luxtak)
