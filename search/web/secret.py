"""The key that signs the web app's session cookies: the same in every API process of a machine."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from clothes_search.settings import Settings

SECRET_FILE = "web-secret-key"


def session_secret(settings: Settings) -> str:
    """``api.web_secret_key``, else a random key made once and kept in ``<data_dir>/web-secret-key``
    (readable by its owner alone), so that the processes of one machine agree without configuration.
    Several machines behind one address need the setting (the same value everywhere)."""
    given = settings.api.web_secret_key
    if given is not None:
        return given.get_secret_value()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_FILE}.")  # mode 0600
        try:
            with os.fdopen(handle, "w") as out:
                out.write(secrets.token_urlsafe(48))
            os.link(temporary, path)  # whole or not at all; when workers race, the first one's key stays
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()
