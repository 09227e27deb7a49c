"""Shared fixtures: settings built per test, real photos, the fetched MediaPipe models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import free_port
from PIL import Image

from clothes_search.settings import Settings
from clothes_search.settings_files import default_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _require(path: Path, how: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: {how}", pytrace=False)
    return path


# where `scripts/setup.sh` puts the fetched model files: the per-user data folder (not the checkout)
MODELS_DIR = Path(os.environ.get("CLOTHES_SEARCH_TEST_MODELS_DIR", default_data_dir() / "models"))


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The per-user models folder the project's set-up fills, with the MediaPipe files in it."""
    _require(
        MODELS_DIR / "mediapipe", "run scripts/setup.sh (it runs `clothes-search models fetch-mediapipe`)"
    )
    return MODELS_DIR


@pytest.fixture(scope="session")
def messi_path() -> Path:
    """A full-body photo of a footballer (OpenCV sample data, installed by the test set-up)."""
    return _require(OPENCV_DATA / "messi5.jpg", "install Debian's opencv-doc (scripts/test.sh does)")


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """An upper-body portrait (public domain, see tests/data/LICENSES.md)."""
    return _require(DATA_DIR / "astronaut.jpg", "tests/data/astronaut.jpg is part of the repository")


@pytest.fixture(scope="session")
def messi(messi_path: Path) -> Image.Image:
    return Image.open(messi_path).convert("RGB")


@pytest.fixture(scope="session")
def astronaut(astronaut_path: Path) -> Image.Image:
    return Image.open(astronaut_path).convert("RGB")


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Settings from keyword overrides, isolated from the caller's CLOTHES_SEARCH_* environment; the
    embedded defaults' files (database, Milvus Lite) land in the test's own folder."""
    for key in list(os.environ):
        if key.startswith("CLOTHES_SEARCH_") and not key.startswith("CLOTHES_SEARCH_TEST_"):
            monkeypatch.delenv(key)

    def build(**overrides: Any) -> Settings:
        overrides.setdefault("models_dir", MODELS_DIR)
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings.load(**overrides)

    return build


@pytest.fixture(scope="session")
def opencv_photo() -> Callable[[str], Image.Image]:
    """Open one of OpenCV's sample photos (Debian opencv-doc) as RGB."""

    def open_photo(name: str) -> Image.Image:
        path = _require(OPENCV_DATA / name, "install Debian's opencv-doc (scripts/test.sh does)")
        return Image.open(path).convert("RGB")

    return open_photo


# -- databases ---------------------------------------------------------------------------------
POSTGRES_ADMIN_URL = os.environ.get(
    "CLOTHES_SEARCH_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cs_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is unusable ({exc}); .ci/run starts it"
        pytest.fail(message, pytrace=False)
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each supported kind (the test runs once per kind)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("postgres_url")


# -- Milvus Lite server ------------------------------------------------------------------------
def _wait_listening(proc: subprocess.Popen, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")  # per module: killed clients elsewhere must not wear out a shared server
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``milvus-lite server`` subprocess on a free port with a fresh data dir: its http:// URI."""
    executable = Path(sys.executable).with_name("milvus-lite")
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install milvus-lite in the virtual environment", pytrace=False)
    root = tmp_path_factory.mktemp("milvus-server")
    log_path = root / "server.log"
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        with log_path.open("ab") as log:
            command = [
                executable,
                "server",
                "--data-dir",
                root / "data",
                "--host",
                "127.0.0.1",
                "--port",
                port,
            ]
            proc = subprocess.Popen([str(c) for c in command], stdout=log, stderr=subprocess.STDOUT)
        if _wait_listening(proc, port, timeout_s=60):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"milvus-lite server did not start:\n{log_path.read_text()[-3000:]}", pytrace=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def milvus_standalone_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus standalone server (PyPI ``milvus``) for the whole session: its ``http://`` URI."""
    from milvus_servers import milvus_standalone

    with milvus_standalone(tmp_path_factory.mktemp("milvus-standalone")) as uri:
        yield uri


@pytest.fixture(scope="module", params=["lite", "standalone"])
def milvus_target(request: pytest.FixtureRequest) -> object:
    """The integration tests' Milvus, once per backend: a Milvus Lite server and a Milvus standalone.

    Each module gets its own collection prefix and live alias. On the standalone, searches are
    ``Strong`` so that a test sees the rows it just wrote (Bounded lags up to a few seconds).
    """
    from milvus_servers import MilvusTarget

    fixture = "milvus_server_uri" if request.param == "lite" else "milvus_standalone_uri"
    uri = request.getfixturevalue(fixture)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings: dict[str, Any] = {
        "uri": uri,
        "collection_prefix": f"crops_{prefix}",
        "live_alias": f"{prefix}_live",
    }
    if request.param == "standalone":
        settings["consistency"] = "Strong"
    return MilvusTarget(request.param, uri, settings)


@pytest.fixture
def serve() -> Iterator[Callable[[object], object]]:
    """Serve Flask apps over real HTTP for one test; afterwards stop them and close their services."""
    from contextlib import ExitStack

    from live_server import served_api

    with ExitStack() as stack:
        yield lambda app: stack.enter_context(served_api(app))
