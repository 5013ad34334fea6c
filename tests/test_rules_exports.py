"""Tests for the shape of the rules package: its exports and its purity."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import rules

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"
GUARD_DIR = ROOT / "guard"
PUBLIC_MODULES = ["rules", "rules.builtin", "rules.config", "rules.money"]

# Modules the pure engine may import. No clock (time, datetime), no logging, no network, no
# randomness, and never guard. pathlib/os/tomllib/json serve rules.load reading the file it is
# given; threading is the registry's lock.
ALLOWED_IMPORTS = {
    "__future__", "collections", "contextlib", "contextvars", "dataclasses", "decimal",
    "functools", "io", "iso4217", "json", "math", "os", "pathlib", "pydantic", "pydantic_core",
    "re", "rules", "threading", "tomllib", "types", "typing", "yaml",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


class TestExports:
    def test_all_is_sorted(self) -> None:
        """rules.__all__ is in sorted order (STYLE.md point 2)."""
        assert sorted(rules.__all__) == rules.__all__

    def test_all_lists_exactly_the_public_names(self) -> None:
        """Every public, non-module attribute of rules is in __all__, and nothing else."""
        public = {
            name for name, value in vars(rules).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        assert public == set(rules.__all__)

    def test_every_export_is_importable(self) -> None:
        """Each name in __all__ resolves."""
        assert all(hasattr(rules, name) for name in rules.__all__)

    def test_load_describe_and_dump_are_exported(self) -> None:
        """The data functions are part of the public API."""
        assert {"describe", "dump", "load"} <= set(rules.__all__)

    @pytest.mark.parametrize("module", PUBLIC_MODULES[1:])
    def test_public_submodules_have_sorted_all(self, module: str) -> None:
        """The public submodules list their names sorted too."""
        names = __import__(module, fromlist=["__all__"]).__all__
        assert sorted(names) == names

    def test_money_lists_exactly_its_public_names(self) -> None:
        """rules.money's __all__ is every public name it has, and each resolves."""
        money = importlib.import_module("rules.money")
        public = {
            name for name, value in vars(money).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        assert public == set(money.__all__)


def rules_names_used(path: Path) -> list[str]:
    """Return every ``rules`` module and name that *path* imports, as ``module:name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used += [f"{alias.name}:" for alias in node.names if alias.name.startswith("rules")]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and not node.level
            and node.module.split(".")[0] == "rules"
        ):
            used += [f"{node.module}:{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "rules"
        ):
            used.append(f"rules:{node.attr}")
    return used


class TestGuardUsesOnlyPublicRules:
    @pytest.mark.parametrize(
        "path", sorted(GUARD_DIR.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
    )
    def test_every_rules_name_guard_imports_is_public(self, path: Path) -> None:
        """Guard imports only public rules modules, and from them only names in __all__."""
        private = []
        for used in rules_names_used(path):
            module, _, name = used.partition(":")
            if module not in PUBLIC_MODULES or (
                name and name not in importlib.import_module(module).__all__
            ):
                private.append(used)
        assert [] == private


class TestPurity:
    def test_importing_rules_never_imports_guard(self) -> None:
        """A fresh interpreter that imports rules has no guard module loaded."""
        code = (
            "import rules, sys; "
            "assert not any(m == 'guard' or m.startswith('guard.') for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith('guard'))"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

    def test_importing_rules_loads_no_logging_or_yaml(self) -> None:
        """Importing rules configures nothing and loads PyYAML only when a YAML file is read."""
        code = (
            "import sys; import rules; "
            "bad = [m for m in ('structlog', 'yaml', 'requests') if m in sys.modules]; "
            "assert not bad, bad"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)

    @pytest.mark.parametrize("path", sorted(RULES_DIR.glob("*.py")), ids=lambda p: p.name)
    def test_modules_import_only_pure_dependencies(self, path: Path) -> None:
        """No module of rules imports a clock, a logger, the network or guard."""
        assert set() == imported_modules(path) - ALLOWED_IMPORTS
