"""Prometheus metrics of the API: collected by request hooks, exposed by ``GET /metrics``.

Each app built by :func:`search.app.create_app` gets its own :class:`ApiMetrics` on its own
``CollectorRegistry`` (never the global default one), so that tests and several apps in one process
do not collide. Metrics:

- ``clothes_search_http_requests_total{endpoint, method, status}``: answered requests;
- ``clothes_search_http_request_duration_seconds{endpoint}``: time from the first hook to the response
  (the body of a streamed response is not included);
- ``clothes_search_similar_stage_duration_seconds{stage}``: the stages of successful ``/similar``
  searches (``fetch`` or ``decode``, ``detect``, ``embed``, ``ann``, ``rerank``, ``db``);
- ``clothes_search_http_errors_total{code}``: error answers by the ``error.code`` of their JSON body.

``endpoint`` is the route's rule (``/items/<path:sku>``), ``unmatched`` for a request that matched
no route (404, 405); ``method`` is one of the standard methods or ``other``: the label values stay few.

Several processes (e.g. ``gunicorn -w 4``): every worker has its own registry, so a scrape sees the
worker that happened to answer it. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory, writable
by the workers, *before* the server starts (``prometheus_client`` reads it at import): the values
are then kept in files there and ``/metrics`` aggregates every worker's with
``prometheus_client.multiprocess.MultiProcessCollector``. Empty the directory between runs of the
server; no gauge is used, so gunicorn's ``child_exit`` hook needs no ``mark_process_dead``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

EXTENSION = "clothes_search_metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_START = "_metrics_start"


class ApiMetrics:
    """The metrics of one app, registered on their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "clothes_search_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "clothes_search_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.similar_stages = Histogram(
            "clothes_search_similar_stage_duration_seconds",
            "Time spent in each stage of a successful /similar search.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "clothes_search_http_errors",
            "Error answers, by the code of their JSON error body.",
            ["code"],
            registry=self.registry,
        )

    @classmethod
    def of(cls, app: Flask) -> ApiMetrics:
        """The metrics registered on ``app`` by :func:`init_metrics`."""
        metrics = app.extensions.get(EXTENSION)
        if not isinstance(metrics, cls):
            raise RuntimeError("the app has no metrics: call search.metrics.init_metrics(app)")
        return metrics

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the format ``accept`` asks for (Prometheus text by default) and its type."""
        registry = self.registry
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type


def _endpoint() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED


def _start_timer() -> None:
    setattr(g, _START, time.perf_counter())


def _error_code(response: Response) -> str | None:
    """The JSON ``error.code`` of an error answer (``unknown`` without one), None for a success."""
    if response.status_code < 400:
        return None
    if response.is_streamed or not response.is_json:
        return "unknown"
    body = response.get_json(silent=True)
    error = body.get("error") if isinstance(body, Mapping) else None
    code = error.get("code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) else "unknown"


def _record(response: Response) -> Response:
    try:
        metrics = ApiMetrics.of(current_app)
        endpoint = _endpoint()
        method = request.method if request.method in _METHODS else "other"
        metrics.requests.labels(endpoint, method, str(response.status_code)).inc()
        start = g.get(_START)
        if start is not None:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        code = _error_code(response)
        if code is not None:
            metrics.errors.labels(code).inc()
    except Exception:  # metrics must never break an answer
        log.exception("recording request metrics failed")
    return response


def observe_similar_stages(timings_ms: Mapping[str, float]) -> None:
    """Record the stage timings (milliseconds) of a successful ``/similar`` search of this request."""
    try:
        histogram = ApiMetrics.of(current_app).similar_stages
        for stage, ms in timings_ms.items():
            histogram.labels(stage).observe(ms / 1000.0)
    except Exception:  # metrics must never break an answer
        log.exception("recording /similar stage metrics failed")


def init_metrics(app: Flask) -> ApiMetrics:
    """Give ``app`` its own metrics and register the request hooks that collect them (call once)."""
    if EXTENSION in app.extensions:
        raise RuntimeError("metrics are already set up on this app")
    metrics = ApiMetrics()
    app.extensions[EXTENSION] = metrics
    app.before_request(_start_timer)
    app.after_request(_record)
    return metrics
