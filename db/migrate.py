"""Running the Alembic migrations in ``migrations/`` against a database URL."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import OperationalError

from clothes_search.settings import DatabaseSettings
from db.session import DatabaseUnavailableError, make_engine


def alembic_config(settings: DatabaseSettings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("migrations")))
    config.set_main_option("sqlalchemy.url", settings.url.replace("%", "%%"))
    return config


def _with_connection(settings: DatabaseSettings, action: str, run) -> None:  # noqa: ANN001 - callable
    engine = make_engine(settings)
    try:
        with engine.begin() as connection:
            config = alembic_config(settings)
            config.attributes["connection"] = connection
            run(config)
    except OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot {action}: database unavailable: {exc.orig}") from exc
    finally:
        engine.dispose()


def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (creates the schema on an empty database)."""
    _with_connection(settings, "upgrade", lambda config: command.upgrade(config, revision))


def downgrade(settings: DatabaseSettings, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes the whole schema)."""
    _with_connection(settings, "downgrade", lambda config: command.downgrade(config, revision))


def head_revision() -> str | None:
    """The newest revision in ``migrations/``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(DatabaseSettings())).get_current_head()


def current_revision(settings: DatabaseSettings) -> str | None:
    engine = make_engine(settings)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise DatabaseUnavailableError(f"database unavailable: {exc.orig}") from exc
    finally:
        engine.dispose()
