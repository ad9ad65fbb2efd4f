"""What the scheduler's jobs run, in the runner process. Stored jobs name these functions."""

import logging
import threading
from datetime import datetime

from sit import health, notifications, scheduler
from sit.mail import outbox
from sit.webhooks import sender

log = logging.getLogger(__name__)

_digest_run = threading.Lock()


def deliver() -> None:
    """Send the emails that are due: each assignment email's job, and the runner's sweep."""
    with scheduler.runner_app().app_context():
        outbox.deliver_due()


def hand_webhooks() -> None:
    """Hand the due webhook messages to their senders (the runner's webhook sweep)."""
    app = scheduler.runner_app()
    with app.app_context():
        sender.hand_due(app)


def heartbeat(host: str, pid: int, since: datetime) -> None:
    """The runner's heartbeat: a job, so the runner is seen only while its jobs run."""
    with scheduler.runner_app().app_context():
        health.beat(host, pid, since)


def digest() -> None:
    """The digest's interval job, and `flask sit send-digest` handed to a running server."""
    with scheduler.runner_app().app_context():
        send_digest()


def send_digest() -> tuple[int, int]:
    """Queue a digest for each user with assigned issues and send what is due, on one SMTP
    connection; one run at a time. Returns (digests queued, emails sent)."""
    if not _digest_run.acquire(blocking=False):
        log.warning("a digest run is still going; this one is skipped")
        return 0, 0
    try:
        return notifications.queue_digests(), outbox.deliver_due()
    finally:
        _digest_run.release()
