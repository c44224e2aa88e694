"""Prometheus metrics: request latency per route, events by outcome, users' pages from the
page cache or computed, impressions and the time their logging takes, LLM sentences shown
and rejected. With several worker processes
(``PROMETHEUS_MULTIPROC_DIR`` set by ``avrec serve``) /metrics adds them up."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate

__all__ = [
    "CONTENT_TYPE_LATEST",
    "EVENTS",
    "IMPRESSIONS",
    "IMPRESSION_LOG",
    "LATENCY",
    "LLM_SENTENCES",
    "PAGES",
    "render",
]

LATENCY = Histogram(
    "avrec_request_seconds",
    "HTTP request latency by route",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENTS = Counter("avrec_events_total", "events received, by outcome", ["status"])
PAGES = Counter(
    "avrec_pages_total",
    "users' recommendation pages: answered from the page cache (hit) or computed (miss)",
    ["cache"],
)
IMPRESSIONS = Counter(
    "avrec_impressions_total", "items shown in served lists, by surface", ["surface"]
)
IMPRESSION_LOG = Histogram(
    "avrec_impression_log_seconds",
    "time a request spends logging its list's impressions (the journal append), what "
    "logging adds on the request's own thread",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2),
)
LLM_SENTENCES = Counter(
    "avrec_llm_sentences_total",
    "LLM explanation sentences: shown, or rejected as not grounded in the item's facts",
    ["status"],
)


def render() -> bytes:
    """The exposition text of every metric (of every worker, in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return _generate(registry)
    from prometheus_client import REGISTRY

    return _generate(REGISTRY)
