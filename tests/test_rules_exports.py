"""Tests for the shape of the rules package: its exports and its purity."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

import rules

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "rules"

# Modules the pure engine may import. No clock (time, datetime), no logging, no network, no
# randomness, and never guard. pathlib/os/tomllib serve rules.load reading the file it is given.
ALLOWED_IMPORTS = {
    "__future__", "collections", "contextlib", "contextvars", "dataclasses", "decimal",
    "functools", "io", "iso4217", "math", "os", "pathlib", "pydantic", "pydantic_core", "re",
    "rules", "tomllib", "types", "typing", "yaml",
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

    @pytest.mark.parametrize("module", ["rules.builtin", "rules.config"])
    def test_public_submodules_have_sorted_all(self, module: str) -> None:
        """The public submodules list their names sorted too."""
        names = __import__(module, fromlist=["__all__"]).__all__
        assert sorted(names) == names


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
