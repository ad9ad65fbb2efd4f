"""`/metrics` for Prometheus: requests, emails and webhook deliveries counted in every process,
the outboxes and the runner read from the database when scraped.

Under gunicorn, `gunicorn.conf.py` sets `PROMETHEUS_MULTIPROC_DIR` before any worker starts:
each process then writes its metrics to files there, and a scrape, whichever worker answers it,
adds up those of every worker of the host, dead ones included (counts never go back).
Elsewhere (`flask run`, tests) a scrape reads this process's own.
"""

import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from apiflask import APIBlueprint, abort
from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy.exc import SQLAlchemyError

from sit import clock, health

log = logging.getLogger(__name__)
bp = APIBlueprint("metrics", __name__, enable_openapi=False)  # for Prometheus, not API clients

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"  # the route of a request no URL rule matched (a 404)
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)

OWN = CollectorRegistry()  # this process's metrics, when not in multiprocess mode
REQUEST_DURATION = Histogram(
    "sit_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, URL rule and status",
    ("method", "route", "status"),
    registry=OWN,
)
EMAILS_SENT = Counter("sit_emails_sent", "Emails the SMTP server accepted", ("kind",), registry=OWN)
SEND_FAILURES = Counter(
    "sit_email_send_failures", "Failed attempts to send an email", ("kind",), registry=OWN
)
LATENESS = Histogram(
    "sit_email_lateness_seconds",
    "From an email's due time to the SMTP server's acceptance",
    ("kind",),
    buckets=LATENESS_BUCKETS,
    registry=OWN,
)
WEBHOOK_DELIVERIES = Counter(
    "sit_webhook_deliveries",
    "Attempts to deliver a webhook message, by result (delivered, failed)",
    ("result",),
    registry=OWN,
)
WEBHOOK_DURATION = Histogram(
    "sit_webhook_duration_seconds",
    "Time from an attempt's start to its outcome",
    buckets=LATENESS_BUCKETS,
    registry=OWN,
)
WORKERS = Gauge("sit_workers", "gunicorn workers alive", registry=OWN, multiprocess_mode="livesum")


class DeliveryCollector:
    """The outbox and the runner, read from the database at each scrape (`sit.health.read`)."""

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration: the database is read at scrape time

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sit_database_up", "1 when the database answered this scrape")
        try:
            delivery = health.read()
        except SQLAlchemyError as error:
            log.warning("metrics: the database did not answer: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        emails = GaugeMetricFamily("sit_outbox_emails", "Emails in the outbox", labels=["state"])
        for state in ("pending", "retrying", "overdue", "failed"):
            emails.add_metric([state], getattr(delivery, state))
        yield emails
        webhooks = GaugeMetricFamily(
            "sit_webhook_messages", "Webhook messages not delivered yet", labels=["state"]
        )
        for state in ("pending", "retrying", "overdue", "failed"):
            webhooks.add_metric([state], getattr(delivery.webhooks, state))
        yield webhooks
        yield GaugeMetricFamily(
            "sit_runner", "1 when a runner is seen, as /healthz says", int(bool(delivery.runner))
        )


DELIVERY = DeliveryCollector()
OWN.register(DELIVERY)


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return OWN
    every_worker = CollectorRegistry()
    MultiProcessCollector(every_worker)
    every_worker.register(DELIVERY)
    return every_worker


def check_token() -> None:
    """:raise 401: `METRICS_TOKEN` is set and the request does not carry it as a Bearer token."""
    expected = current_app.config["METRICS_TOKEN"]
    if expected is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        detail = "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>."
        abort(401, detail, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus's text format."""
    check_token()
    return Response(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)


def start_timer() -> None:
    g.request_started = time.perf_counter()


def observe(response: Response) -> Response:
    """Time the request under its URL rule, never its path, so the labels stay few."""
    rule = request.url_rule.rule if request.url_rule else UNMATCHED
    method = request.method if request.method in METHODS else "other"
    elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
    REQUEST_DURATION.labels(method, rule, str(response.status_code)).observe(elapsed)
    return response


def email_sent(row: Any) -> None:
    """Count an email the server accepted, and how late it was (`row` has `kind`, `due_at`)."""
    EMAILS_SENT.labels(row.kind).inc()
    LATENESS.labels(row.kind).observe((clock.utcnow() - row.due_at).total_seconds())


def email_failed(kind: str) -> None:
    SEND_FAILURES.labels(kind).inc()


def webhook_attempted(delivered: bool, seconds: float) -> None:
    WEBHOOK_DELIVERIES.labels("delivered" if delivered else "failed").inc()
    WEBHOOK_DURATION.observe(seconds)


def count_worker() -> None:
    """A gunicorn worker is alive (its share is dropped when it exits: `gunicorn.conf.py`)."""
    WORKERS.set(1)


def init_app(app: Flask) -> None:
    """Time every request: registered first, so the timer starts before any other hook."""
    app.before_request(start_timer)
    app.after_request(observe)
    app.register_blueprint(bp)
