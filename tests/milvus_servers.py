"""Real Milvus servers for the tests: the Milvus standalone (PyPI ``milvus``, started by
``scripts/milvus_standalone.sh``) and what the vector-store tests share about backends.

The standalone runs once per test session on a free port with a fresh data folder (one per machine:
its embedded etcd has fixed ports). ``CLOTHES_SEARCH_TEST_MILVUS_URI`` points the tests at a running
server instead. Tests share it: each module works under its own collection prefix and alias, and the
store tests clear it (:func:`clear_server`) before they start.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from live_server import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "milvus_standalone.sh"
STANDALONE_URI_ENV = "CLOTHES_SEARCH_TEST_MILVUS_URI"


@contextmanager
def milvus_standalone(data_dir: Path) -> Iterator[str]:
    """A Milvus standalone server for the ``with`` block: its ``http://`` URI."""
    given = os.environ.get(STANDALONE_URI_ENV)
    if given:
        yield given
        return
    port = free_port()
    # time ticks every 50 ms instead of 200: a Strong read (what the tests use) waits less
    command = [
        "bash",
        str(SCRIPT),
        "start",
        str(data_dir),
        str(port),
        "--extra-config",
        "proxy.timeTickInterval=50",
    ]
    started = subprocess.run(command, capture_output=True, text=True, timeout=400)
    if started.returncode != 0:
        pytest.fail(
            f"the Milvus standalone did not start ({SCRIPT} start; `scripts/test.sh` installs it):\n"
            f"{started.stdout[-2000:]}{started.stderr[-3000:]}",
            pytrace=False,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(data_dir)], capture_output=True, timeout=120)


def clear_server(uri: str, keep: str | None = None) -> None:
    """Drop every alias and collection of a test server; ``keep`` stays, emptied (creating and loading a
    collection takes seconds on a server, deleting its rows milliseconds)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri, timeout=60)
    try:
        for alias in client.list_aliases().get("aliases", []):
            client.drop_alias(alias)
        for name in client.list_collections():
            if name == keep:
                client.delete(name, filter="id >= 0")
            else:
                client.drop_collection(name)
    finally:
        client.close()


@dataclass(frozen=True)
class MilvusTarget:
    """A Milvus for one test module: which backend, its URI and the settings that keep the module apart."""

    backend: str  # "lite" (a Milvus Lite server) or "standalone"
    uri: str
    settings: dict[str, Any] = field(default_factory=dict)  # the milvus section's overrides

    @property
    def strong(self) -> bool:
        return self.backend == "standalone"
