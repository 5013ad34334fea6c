"""Running the ``payout-guard`` command in a subprocess, against emulators started by a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from guard.testing.emulators import LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "guard.toml"


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m guard ARGS`` and return what it printed and its exit code."""
    # Tables as off a terminal (160 columns), whatever width the shell running the tests has.
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("PAYOUT_GUARD_") and key not in {"COLUMNS", "LINES"}}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "guard", *args], capture_output=True, text=True,
        timeout=timeout, env=environment, cwd=cwd or ROOT, check=False,
    )


def parse_json(text: str) -> Any:
    """Parse JSON output with exact decimals."""
    return json.loads(text, parse_float=Decimal)


def emulator_env(luxtak: LuxtakEmulator | None = None, luxcore: LuxCoreEmulator | None = None,
                 pagsmile: PagsmileEmulator | None = None) -> dict[str, str]:
    """Return the credential variables the configuration of :func:`write_config` names."""
    env: dict[str, str] = {}
    if luxtak is not None:
        env |= {"TEST_LUXTAK_APP_ID": luxtak.app_id, "TEST_LUXTAK_APP_KEY": luxtak.app_key}
    if luxcore is not None:
        env |= {"TEST_LUXCORE_API_KEY": luxcore.api_key}
    if pagsmile is not None:
        env |= {"TEST_PAGSMILE_APP_ID": pagsmile.app_id,
                "TEST_PAGSMILE_SECURITY_KEY": pagsmile.security_key}
    return env


def write_config(path: Path, *, luxtak: LuxtakEmulator | None = None,
                 luxcore: LuxCoreEmulator | None = None,
                 pagsmile: PagsmileEmulator | None = None, rules: str = "",
                 head: str = "") -> Path:
    """Write a TOML configuration pointing at the given emulators (credentials by env var)."""
    retry = "retry = { attempts = 1, deadline = 5 }\ntimeout = 2\n"
    parts = [head, "[cache]\nttl = 0\n"]
    if luxtak is not None:
        parts.append(f'[providers.luxtak]\nbase_url = "{luxtak.url}"\n'
                     'app_id_env = "TEST_LUXTAK_APP_ID"\napp_key_env = "TEST_LUXTAK_APP_KEY"\n'
                     + retry)
    if luxcore is not None:
        parts.append(f'[providers.luxcore]\nbase_url = "{luxcore.url}"\n'
                     'api_key_env = "TEST_LUXCORE_API_KEY"\n' + retry)
    if pagsmile is not None:
        parts.append(f'[providers.pagsmile]\nbase_url = "{pagsmile.url}"\n'
                     'app_id_env = "TEST_PAGSMILE_APP_ID"\n'
                     'security_key_env = "TEST_PAGSMILE_SECURITY_KEY"\n' + retry)
    parts.append(rules)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
