"""The :class:`~clothes_search.services.Services` of one Celery worker process, made after the fork."""

from __future__ import annotations

from celery import signals

from clothes_search.services import Services
from clothes_search.settings import Settings

# this process's Settings (set by create_celery) and Services (made on first use after the fork)
_settings: Settings | None = None
_services: Services | None = None


def configure(settings: Settings) -> None:
    """Remember the settings the tasks of this process use (called by ``create_celery``)."""
    global _settings
    _settings = settings


def services() -> Services:
    """This worker process's services (created on first use after the fork)."""
    global _services
    if _services is None:
        if _settings is None:
            raise RuntimeError("create_celery() was not called in this process")
        _services = Services(_settings)
    return _services


@signals.worker_process_init.connect
def _after_fork(**_: object) -> None:
    # drop anything inherited from the parent; the child makes its own connections and models
    global _services
    _services = None


@signals.worker_process_shutdown.connect
def _before_exit(**_: object) -> None:
    global _services
    found, _services = _services, None
    if found is not None:
        found.close()
