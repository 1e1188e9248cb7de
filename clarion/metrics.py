"""Prometheus metrics of every Clarion process, and the thin calls that move them.

One module at the bottom of the dependency graph (it imports nothing of Clarion), so the
choke points call it directly: the create step (``after_commit``), the deliver step, the
rule runner, the live-stream hub and the API's middleware and rate limiter. How the
registry is served (the API's ``/metrics``, a worker's port, prefork children) lives in
:mod:`clarion.exposition`; queue depth is read from the broker at scrape time
(:mod:`clarion.workers.queue_metrics`). docs/operations/metrics.md lists every metric.

Labels stay low-cardinality: channel, lane, status, route *template*, rule key; never a
subscriber, a notification id or a raw path. Categories are chosen by producers, so at
most :data:`MAX_CATEGORIES` distinct ones are labelled per process, the rest as ``other``.

Metrics are created at import, before any process forks: in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set by :mod:`clarion.exposition` before this import) each
process writes its own file and a scrape sums them.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

# Seconds: from a millisecond (a render) to an hour (a delivery retried with backoff).
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SEND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600)

# -- API ----------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "clarion_http_requests_total",
    "HTTP requests answered by the API, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "clarion_http_request_duration_seconds",
    "Time from a request's arrival to its response head (a stream: to its first byte).",
    ["method", "route"],
    buckets=FAST_BUCKETS,
)
STREAM_CONNECTIONS = Gauge(
    "clarion_stream_connections",
    "Live-event connections open now, by transport (websocket or sse).",
    ["transport"],
    multiprocess_mode="livesum",
)
STREAM_EVENTS = Counter(
    "clarion_stream_events_fanned_out_total",
    "Events handed to live connections (one event to three connections counts three).",
)
RATE_LIMITED = Counter(
    "clarion_rate_limited_total",
    "Requests refused with 429, by the limit that refused them.",
    ["limit"],
)

# -- create -------------------------------------------------------------------------------

NOTIFICATIONS_CREATED = Counter(
    "clarion_notifications_created_total",
    "Notifications stored (reruns and dedupe hits excluded), by category and lane.",
    ["category", "lane"],
)

# -- deliver ------------------------------------------------------------------------------

DELIVERIES = Counter(
    "clarion_deliveries_total",
    "Deliveries that reached a final status (sent, dead or skipped), by channel.",
    ["channel", "status"],
)
ATTEMPTS = Counter(
    "clarion_delivery_attempts_total",
    "Delivery attempts by channel and outcome (sent, retry, dead, gone, expired).",
    ["channel", "outcome"],
)
RETRIES = Counter(
    "clarion_delivery_retries_total",
    "Attempts that failed and will be retried, by channel.",
    ["channel"],
)
DEAD_LETTERS = Counter(
    "clarion_dead_letters_total",
    "Deliveries given up on and recorded as dead letters, by channel.",
    ["channel"],
)
DELIVERY_LATENCY = Histogram(
    "clarion_delivery_latency_seconds",
    "From a notification's acceptance by the API to its successful send, by channel.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
RENDER_DURATION = Histogram(
    "clarion_render_duration_seconds",
    "Time a channel takes to render one message (email MIME, push payload, webhook body).",
    ["channel"],
    buckets=FAST_BUCKETS,
)
SEND_DURATION = Histogram(
    "clarion_send_duration_seconds",
    "Time one send to the provider takes (SMTP, push service, webhook), by channel.",
    ["channel"],
    buckets=SEND_BUCKETS,
)

# -- rule engine --------------------------------------------------------------------------

RULE_RUNS = Counter(
    "clarion_rule_runs_total",
    "Rule runs (dry runs excluded), by rule and trigger (schedule, event, manual).",
    ["rule", "trigger"],
)
RULE_CANDIDATES = Counter(
    "clarion_rule_candidates_total", "Recipients a rule's runs proposed.", ["rule"]
)
RULE_CREATED = Counter(
    "clarion_rule_notifications_created_total", "Notifications a rule's runs created.", ["rule"]
)
RULE_DUPLICATES = Counter(
    "clarion_rule_duplicates_total",
    "Candidates a rule's runs skipped: the recipient had been notified under that key.",
    ["rule"],
)
RULE_ERRORS = Counter("clarion_rule_errors_total", "Rule runs that ended in an error.", ["rule"])
RULE_DURATION = Histogram(
    "clarion_rule_run_duration_seconds",
    "Time a rule run takes, by rule.",
    ["rule"],
    buckets=SEND_BUCKETS,
)

# -- workers ------------------------------------------------------------------------------

WORKER_PROCESSES = Gauge(
    "clarion_worker_processes",
    "Worker processes running tasks now (prefork children, or the worker itself).",
    multiprocess_mode="livesum",
)

# -- calls from the choke points ----------------------------------------------------------

MAX_CATEGORIES = 100
OTHER = "other"
_categories: set[str] = set()
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FINAL = frozenset({"sent", "dead", "skipped"})
# (method, route, status) → the children to move: labels() per request costs more.
_http_children: dict[tuple[str, str, int], tuple] = {}


def _category(name: str) -> str:
    if name in _categories:
        return name
    if len(_categories) < MAX_CATEGORIES:
        _categories.add(name)
        return name
    return OTHER


def notifications_created(counts: Mapping[tuple[str, str], int]) -> None:
    """``counts``: (category, lane) → notifications one create committed."""
    for (category, lane), n in counts.items():
        NOTIFICATIONS_CREATED.labels(_category(category), lane).inc(n)


def delivered_to_inbox(inbox: str, n: int) -> None:
    """Inbox deliveries are made sent in the create transaction itself."""
    if n:
        DELIVERIES.labels(inbox, "sent").inc(n)


def delivery_finished(
    channel: str, outcome: str, status: str, *, dead_lettered: bool, latency: float | None
) -> None:
    """One attempt's recorded outcome (clarion.core.deliver)."""
    ATTEMPTS.labels(channel, outcome).inc()
    if status in FINAL:
        DELIVERIES.labels(channel, status).inc()
    if outcome == "retry":
        RETRIES.labels(channel).inc()
    if dead_lettered:
        DEAD_LETTERS.labels(channel).inc()
    if latency is not None:
        DELIVERY_LATENCY.labels(channel).observe(max(0.0, latency))


def deliveries_skipped(channel: str, n: int) -> None:
    """Deliveries skipped without an attempt (the channel is not configured)."""
    if n:
        DELIVERIES.labels(channel, "skipped").inc(n)


def rule_ran(
    rule: str,
    trigger: str,
    *,
    candidates: int,
    created: int,
    duplicates: int,
    failed: bool,
    seconds: float,
) -> None:
    RULE_RUNS.labels(rule, trigger).inc()
    RULE_CANDIDATES.labels(rule).inc(candidates)
    RULE_CREATED.labels(rule).inc(created)
    RULE_DUPLICATES.labels(rule).inc(duplicates)
    if failed:
        RULE_ERRORS.labels(rule).inc()
    RULE_DURATION.labels(rule).observe(seconds)


def rate_limited(limit: str) -> None:
    """A request was refused with 429 by ``limit`` (a fixed name, never a caller's id)."""
    RATE_LIMITED.labels(limit).inc()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    children = _http_children.get(key)
    if children is None:
        shown = method if method in _METHODS else "other"
        children = (
            HTTP_REQUESTS.labels(shown, route, str(status)),
            HTTP_DURATION.labels(shown, route),
        )
        if len(_http_children) < 10_000:  # routes × methods × statuses: bounded anyway
            _http_children[key] = children
    children[0].inc()
    children[1].observe(seconds)
