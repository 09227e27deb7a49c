"""Where the settings' files are: the per-user data folder and paths relative to a config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs
from pydantic_settings import TomlConfigSettingsSource

APP_NAME = "clothes-search"
SQLITE_PREFIX = "sqlite:///"


def default_data_dir() -> Path:
    """The per-user folder of the embedded defaults' files (platformdirs' user data folder)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def absolute(path: Path) -> Path:
    """``path`` with ``~`` expanded, made absolute against the working folder, ``..`` folded."""
    return Path(os.path.abspath(path.expanduser()))


def absolute_sqlite_url(url: str) -> str:
    """``sqlite:///relative/path`` made absolute; other URLs (and in-memory SQLite) as they are."""
    if not url.startswith(SQLITE_PREFIX):
        return url
    path = url.removeprefix(SQLITE_PREFIX)
    if not path or path.startswith(":memory:") or path.startswith("/"):
        return url
    return f"{SQLITE_PREFIX}{absolute(Path(path))}"


def resolve_config_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A config file's values with its relative file paths made relative to ``folder`` (the file's own).

    Covers ``data_dir``, ``models_dir``, a ``sqlite:///`` database URL, a local Milvus Lite path and
    the Milvus Lite server folder, and each model's ``checkpoint``, ``options.model_dir``,
    ``options.model_config_dir`` and ``local-dir:`` model.
    """

    def place(value: object) -> object:
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            return str(folder / value)
        return value

    out = dict(data)
    for key in ("data_dir", "models_dir"):
        if key in out:
            out[key] = place(out[key])
    database = dict(out.get("database") or {})
    url = database.get("url")
    if isinstance(url, str) and url.startswith(SQLITE_PREFIX) and url != SQLITE_PREFIX + ":memory:":
        database["url"] = SQLITE_PREFIX + str(place(url.removeprefix(SQLITE_PREFIX)))
        out["database"] = database
    milvus = dict(out.get("milvus") or {})
    uri = milvus.get("uri")
    if isinstance(uri, str) and uri and "://" not in uri and not uri.startswith("unix:"):
        milvus["uri"] = place(uri)
    if "server_data_dir" in milvus:
        milvus["server_data_dir"] = place(milvus["server_data_dir"])
    if milvus:
        out["milvus"] = milvus
    for section in ("detectors", "embedders"):
        models = out.get(section)
        if not isinstance(models, list):
            continue
        placed = []
        for model in models:
            if not isinstance(model, dict):
                placed.append(model)
                continue
            model = dict(model)
            if "checkpoint" in model:
                model["checkpoint"] = place(model["checkpoint"])
            name = model.get("model")
            if isinstance(name, str) and name.startswith("local-dir:"):
                model["model"] = "local-dir:" + str(place(name.removeprefix("local-dir:")))
            options = model.get("options")
            if isinstance(options, dict):
                model["options"] = {
                    k: place(v) if k in ("model_dir", "model_config_dir") else v for k, v in options.items()
                }
            placed.append(model)
        out[section] = placed
    return out


class ConfigFileSource(TomlConfigSettingsSource):
    """The TOML config file, its relative paths resolved against the file's folder."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        data = super()._read_file(file_path)
        return resolve_config_paths(data, absolute(Path(file_path)).parent)
