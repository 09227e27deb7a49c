"""Limits that hold under abuse: per-key request rates and the /similar work one process takes at once.

- **Rates** (the ``limits`` library, moving windows): ``api.search_rate_limit`` for ``/similar`` and
  ``api.rate_limit`` for the rest, per API key, or per client address for anonymous calls. Counters
  live in Redis when one is configured (``api.limits_storage_uri``, else the queue's broker), so that
  every process and machine shares them; otherwise in this process. Over the limit: **429** with
  ``Retry-After``. A counter store that fails lets requests through (logged): the limiter must not
  take the API down with it.
- **Concurrency**: at most ``api.max_concurrent_searches`` ``/similar`` requests work at once per
  process; one more answers **503** with ``Retry-After`` at once instead of queueing behind them
  (the other endpoints keep answering).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from clothes_search.settings import ApiSettings
from search.errors import ApiError

log = logging.getLogger(__name__)

SEARCH, DEFAULT = "search", "default"


class RequestLimits:
    """The rate limits and the /similar slots of one API process."""

    def __init__(self, settings: ApiSettings, broker_url: str | None) -> None:
        uri = settings.limits_storage_uri
        if uri is None:
            uri = (
                broker_url if broker_url and broker_url.startswith(("redis://", "rediss://")) else "memory://"
            )
        self.storage_uri = uri
        self._limiter = MovingWindowRateLimiter(storage_from_string(uri))
        self._rates: dict[str, RateLimitItem] = {
            SEARCH: parse(settings.search_rate_limit),
            DEFAULT: parse(settings.rate_limit),
        }
        self._slots = threading.BoundedSemaphore(settings.max_concurrent_searches)

    def check_rate(self, group: str, identity: str) -> None:
        """Count one request of ``identity`` in ``group``; 429 with ``Retry-After`` over the limit."""
        rate = self._rates[group]
        try:
            allowed = self._limiter.hit(rate, group, identity)
        except Exception:  # the counter store is down: serve rather than refuse everyone
            log.warning(
                "rate limiting skipped: the counter store (%s) failed", self.storage_uri, exc_info=True
            )
            return
        if allowed:
            return
        try:
            reset = self._limiter.get_window_stats(rate, group, identity).reset_time
        except Exception:
            reset = time.time() + 1
        retry = max(1, math.ceil(reset - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests ({rate}): retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )

    @contextmanager
    def search_slot(self) -> Iterator[None]:
        """Hold one of this process's /similar slots; 503 with ``Retry-After`` when none is free."""
        if not self._slots.acquire(blocking=False):
            raise ApiError(
                503,
                "busy",
                "this server is at its search capacity: retry shortly",
                headers={"Retry-After": "1"},
            )
        try:
            yield
        finally:
            self._slots.release()
