"""Engines and sessions for the metadata database, created per process, never at import."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from clothes_search.errors import ClothesSearchError
from clothes_search.settings import DatabaseSettings


class DatabaseError(ClothesSearchError):
    kind = "database_error"


class DatabaseUnavailableError(DatabaseError):
    """The database cannot be reached (a transient condition: retry later)."""

    kind = "database_unavailable"


def make_engine(settings: DatabaseSettings) -> Engine:
    """An engine for ``settings.url``; SQLite gets WAL, foreign keys and a busy timeout, PostgreSQL a
    connect timeout and a statement timeout (a stuck database answers 503, not a hung request)."""
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=settings.echo, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API objects
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args: dict[str, object] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = settings.connect_timeout_s
        if settings.statement_timeout_s is not None:
            connect_args["options"] = f"-c statement_timeout={int(settings.statement_timeout_s * 1000)}"
    return create_engine(
        url, echo=settings.echo, pool_size=settings.pool_size, pool_pre_ping=True, connect_args=connect_args
    )


class Database:
    """The engine and session factory of one process (create it after a fork, not before)."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        _ = self.engine
        assert self._sessions is not None
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise DatabaseUnavailableError(f"database unavailable ({self.safe_url}): {exc.orig}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return make_url(self.settings.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._sessions = None
