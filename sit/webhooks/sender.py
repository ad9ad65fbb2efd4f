"""How webhook messages are sent: the runner hands the due ones to a small pool of threads of
their own (a receiver that hangs to the timeout holds up no email, and at most `SENDERS`
deliveries); each attempt is signed, guarded, timed out, logged, and retried on the schedule
(`WEBHOOK_RETRY_SCHEDULE`) until a 2xx or the schedule's end. An endpoint whose deliveries have
all failed for `WEBHOOK_DISABLE_AFTER` is deactivated, and says why."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import urllib3
from flask import Flask, current_app

from sit import clock, metrics
from sit.extensions import db
from sit.models import Webhook, WebhookDelivery, WebhookMessage
from sit.webhooks import guard
from sit.webhooks.messages import signed_headers

log = logging.getLogger(__name__)

SENDERS = 4  # deliveries at once, each on a thread of its own
ERROR_KEPT = 500  # characters of an error kept

_lock = threading.Lock()
_in_flight: set[int] = set()  # messages handed to a sender and not settled yet
_pool: ThreadPoolExecutor | None = None


def due_ids(limit: int, skip: set[int]) -> list[int]:
    """The due pending messages of active webhooks, oldest due first, but those in `skip`."""
    query = (
        sa.select(WebhookMessage.id)
        .join(Webhook, Webhook.id == WebhookMessage.webhook_id)
        .where(WebhookMessage.state == "pending", WebhookMessage.due_at <= clock.utcnow())
        .where(Webhook.active)
        .order_by(WebhookMessage.due_at, WebhookMessage.id)
        .limit(limit + len(skip))
    )
    found = [pk for pk in db.session.scalars(query) if pk not in skip][:limit]
    db.session.rollback()  # end the read
    return found


def hand_due(app: Flask) -> int:
    """Hand the due messages to the senders, as many as they can take now; returns how many.
    Never waits for a delivery: the runner's sweep calls this and goes on."""
    global _pool
    with _lock:
        skip = set(_in_flight)
    free = SENDERS - len(skip)
    handed = due_ids(free, skip) if free > 0 else []
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="sit-webhook")
        for message_id in handed:
            _in_flight.add(message_id)
            _pool.submit(send_in, app, message_id)
    return len(handed)


def send_in(app: Flask, message_id: int) -> None:
    try:
        with app.app_context():
            send(message_id)
    except Exception:  # the message stays pending; the next sweep hands it again
        log.exception("webhook message %d could not be sent", message_id)
    finally:
        with _lock:
            _in_flight.discard(message_id)


@dataclass
class Attempt:
    """One attempt's request and outcome, as the delivery log keeps it."""

    headers: dict[str, str]
    started_at: datetime
    duration: float = 0.0
    status: int | None = None
    response: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def attempt(url: str, secret: str, msg_id: str, text: str) -> Attempt:
    """Post a message once: signed now, to a checked address, within `WEBHOOK_TIMEOUT` (its
    name's lookup included)."""
    config = current_app.config
    result = Attempt(signed_headers(secret, msg_id, text), clock.utcnow())
    started = time.perf_counter()
    timeout = config["WEBHOOK_TIMEOUT"]  # for the lookup and the post together
    try:
        target = guard.check(url, config["WEBHOOK_ALLOWED_HOSTS"], timeout)
        left = max(timeout - (time.perf_counter() - started), 0.001)
        sent = guard.post(target, result.headers, text.encode(), left)
        result.status, result.response, location = sent
        if not result.delivered:
            redirect = result.status // 100 == 3
            moved = f" (a redirect to {location}; redirects are not followed)" if redirect else ""
            result.error = f"the receiver answered {result.status}{moved}"
    except guard.Refused as error:
        result.error = f"refused: {error}"
    except (OSError, urllib3.exceptions.HTTPError) as error:
        result.error = f"{type(error).__name__}: {error}"
    result.duration = time.perf_counter() - started
    return result


def send(message_id: int) -> None:
    """Attempt a pending message once and commit the outcome."""
    message = db.session.get(WebhookMessage, message_id)
    webhook = db.session.get(Webhook, message.webhook_id) if message else None
    if message is None or webhook is None or message.state != "pending" or not webhook.active:
        return
    request = (webhook.url, webhook.secret, message.msg_id, message.body)
    db.session.rollback()  # no transaction held while the receiver takes its time
    result = attempt(*request)
    message = db.session.get(WebhookMessage, message_id)
    if message is None:
        return  # its webhook was deleted meanwhile, and the log with it
    settle(message, result)
    db.session.commit()
    metrics.webhook_attempted(result.delivered, result.duration)
    if not result.delivered:
        log.warning("webhook message %s to %s failed: %s", request[2], request[0], result.error)


def settle(message: WebhookMessage, result: Attempt) -> None:
    """Log the attempt, and set what follows: delivered, the next retry, or failed."""
    message.attempts += 1
    db.session.add(
        WebhookDelivery(
            webhook_id=message.webhook_id,
            message_id=message.id,
            attempt=message.attempts,
            state="delivered" if result.delivered else "failed",
            request_headers=result.headers,
            response_status=result.status,
            response_body=result.response,
            duration=result.duration,
            error=result.error and result.error[:ERROR_KEPT],
            started_at=result.started_at,
        )
    )
    webhook = db.session.get_one(Webhook, message.webhook_id)
    if result.delivered:
        message.state, message.last_error, webhook.failing_since = "delivered", None, None
        return
    message.last_error = result.error and result.error[:ERROR_KEPT]
    schedule = current_app.config["WEBHOOK_RETRY_SCHEDULE"]
    if message.attempts <= len(schedule):
        message.due_at = clock.utcnow() + timedelta(seconds=schedule[message.attempts - 1])
    else:
        message.state = "failed"
    webhook.failing_since = webhook.failing_since or result.started_at
    if clock.utcnow() - webhook.failing_since >= disable_after():
        deactivate(webhook)


def disable_after() -> timedelta:
    return timedelta(seconds=current_app.config["WEBHOOK_DISABLE_AFTER"])


def deactivate(webhook: Webhook) -> None:
    """Deactivate an endpoint whose deliveries have all failed for `WEBHOOK_DISABLE_AFTER`;
    its pending messages fail with it."""
    since = webhook.failing_since.isoformat(timespec="seconds") if webhook.failing_since else ""
    webhook.active = False
    webhook.disabled_reason = f"deactivated: every delivery has failed since {since}"
    fail_pending(webhook.id, webhook.disabled_reason)
    log.warning("webhook %d (%s) %s", webhook.id, webhook.url, webhook.disabled_reason)


def fail_pending(webhook_id: int, reason: str) -> None:
    """The webhook is no longer active: its pending messages will never be sent."""
    pending = (WebhookMessage.webhook_id == webhook_id) & (WebhookMessage.state == "pending")
    failed: dict[str, Any] = {"state": "failed", "last_error": reason}
    db.session.execute(sa.update(WebhookMessage).where(pending).values(failed))
