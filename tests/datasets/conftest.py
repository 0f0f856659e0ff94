"""Fixtures shared by the dataset-tool tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def load_tool():
    """Loads tools/<name>.py as a module (the scripts are not a package)."""

    def load(name: str):
        path = REPO_ROOT / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"tool_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
