"""The layer contracts (pyproject.toml [tool.importlinter]) hold, and a wrong-way import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("clothes_search", "ingestion", "db", "search", "workers", "migrations")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root`` (found there first, not the installed checkout)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def copy_of_the_tree(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_layer_contract(copy_of_the_tree: Path):
    result = lint_imports(copy_of_the_tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "imports", "message"),
    [
        ("db/wrong_way.py", "import search.app", "db is not allowed to import search"),
        ("ingestion/wrong_way.py", "from db import vectors", "ingestion is not allowed to import db"),
        ("workers/wrong_way.py", "import search.similar", "workers is not allowed to import search"),
        (
            "ingestion/embedders/wrong_way.py",
            "from clothes_search.training.embedder import freezing",
            "ingestion is not allowed to import clothes_search.training",
        ),
    ],
)
def test_a_wrong_way_import_breaks_the_check(copy_of_the_tree: Path, module, imports, message):
    (copy_of_the_tree / module).write_text(f"{imports}  # a lower layer reaching up\n")
    result = lint_imports(copy_of_the_tree)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout
