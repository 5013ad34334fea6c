"""Loopback HTTP emulators of the provider balance APIs, for tests.

Each emulator is a real HTTP server on 127.0.0.1 that checks credentials exactly like the
provider, answers with the provider's own bodies, and can inject faults::

    with LuxCoreEmulator(balances={"ARS": "12000.00"}) as emu:
        emu.fail_next(Fault.HTTP_503)
        ...  # point a fetcher at emu.url with emu.api_key
"""

from guard.testing.emulators._base import BalanceCall, Fault, ReceivedRequest
from guard.testing.emulators.luxcore import LuxCoreEmulator
from guard.testing.emulators.luxtak import LuxtakEmulator
from guard.testing.emulators.pagsmile import PagsmileEmulator

__all__ = [
    "BalanceCall",
    "Fault",
    "LuxCoreEmulator",
    "LuxtakEmulator",
    "PagsmileEmulator",
    "ReceivedRequest",
]
