"""The package layout docs/ARCHITECTURE.md describes: import contracts (setup.cfg's ``[importlinter]``), entry
points only at the top of ``frontend/``, and the configuration's parser names matching the parsers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from frontend.config.parser_names import REASONING_PARSER_NAMES, TOOL_PARSER_NAMES
from frontend.parsers.registry import REASONING_PARSERS, TOOL_PARSERS

REPO = Path(__file__).resolve().parents[2]
ENTRY_MODULES = {"__init__.py", "__main__.py", "cli.py"}


def test_import_contracts_are_kept():
    importlinter = pytest.importorskip("importlinter.cli", reason="import-linter comes with the test extra")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        assert importlinter.lint_imports(config_filename=str(REPO / "setup.cfg"), no_cache=True) == 0
    finally:
        os.chdir(cwd)


def test_only_entry_points_sit_at_the_top_of_the_package():
    loose = {p.name for p in (REPO / "frontend").iterdir() if p.is_file() and p.suffix == ".py"}
    assert loose <= ENTRY_MODULES, sorted(loose - ENTRY_MODULES)


def test_every_configurable_parser_name_has_a_parser():
    assert set(TOOL_PARSERS) == set(TOOL_PARSER_NAMES)
    assert set(REASONING_PARSERS) == set(REASONING_PARSER_NAMES)
