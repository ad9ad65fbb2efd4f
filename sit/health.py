"""How the database and delivery (emails, webhook messages) stand: one reading, shared by
`/healthz`, `flask sit status` and `/metrics`; and the runner's heartbeat, which makes the
runner visible to every worker on every host (it is a row in the shared database)."""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from apiflask import APIBlueprint
from sqlalchemy.exc import SQLAlchemyError

from sit import clock
from sit.extensions import db
from sit.models import Email, Runner, WebhookMessage
from sit.schemas import HealthOut

bp = APIBlueprint("health", __name__, tag="Health")

HEARTBEAT_SECONDS = 2  # how often the runner writes its row
SEEN_SECONDS = 10  # a runner whose row is older is not seen
OVERDUE_SECONDS = 60  # a pending email due longer ago than this, never tried, is overdue
THE_RUNNER = Runner.__table__.c


@dataclass(frozen=True)
class RunnerSeen:
    host: str
    pid: int
    since: datetime


@dataclass(frozen=True)
class Webhooks:
    """How webhook messages stand (counted as emails are)."""

    pending: int  # waiting to be delivered
    retrying: int  # of those, with at least one failed attempt
    overdue: int  # of those, due over OVERDUE_SECONDS ago and never tried
    failed: int  # given up on


@dataclass(frozen=True)
class Delivery:
    """How email and webhook delivery stand, as the database says now."""

    runner: RunnerSeen | None  # None: none seen in the last SEEN_SECONDS
    pending: int  # emails waiting to be sent
    retrying: int  # of those, with at least one failed attempt
    overdue: int  # of those, due over OVERDUE_SECONDS ago and never tried
    failed: int  # given up on
    last_error: str | None  # the latest failed attempt's error, while any email is retrying
    webhooks: Webhooks

    @property
    def status(self) -> Literal["ok", "degraded"]:
        """A receiver that fails is its owner's trouble, not SIT's: webhook messages retrying
        or failed leave SIT healthy; overdue ones (no runner sending) do not."""
        healthy = self.runner is not None and not self.retrying and not self.overdue
        return "ok" if healthy and not self.webhooks.overdue else "degraded"


def counts(outbox: type[Email] | type[WebhookMessage], now: datetime) -> sa.Select[Any]:
    """An outbox's messages: pending, retrying, overdue, failed (one query on indexed columns)."""
    pending, retrying = outbox.state == "pending", outbox.attempts >= 1
    long_due = outbox.due_at < now - timedelta(seconds=OVERDUE_SECONDS)
    overdue = pending & (outbox.attempts == 0) & long_due
    return sa.select(
        sa.func.count().filter(pending),
        sa.func.count().filter(pending & retrying),
        sa.func.count().filter(overdue),
        sa.func.count().filter(outbox.state == "failed"),
    ).where(outbox.state.in_(("pending", "failed")))


def read() -> Delivery:
    """Read how delivery stands (three small queries on indexed columns).

    :raise SQLAlchemyError: the database cannot be reached (or has no schema yet).
    """
    now = clock.utcnow()
    # The emails' counts and latest error in one statement, so one snapshot: read apart, a
    # runner committing between them (PostgreSQL reads each statement afresh) showed an email
    # retrying with no error.
    last_error = (
        sa.select(Email.last_error)
        .where(Email.state == "pending", Email.attempts >= 1)
        .order_by(Email.last_error_at.desc(), Email.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    emails = db.session.execute(counts(Email, now).add_columns(last_error)).one()
    webhooks = Webhooks(*db.session.execute(counts(WebhookMessage, now)).one())
    return Delivery(runner_seen(now), *emails, webhooks)


def runner_seen(now: datetime) -> RunnerSeen | None:
    """The runner, if its heartbeat is recent."""
    row = db.session.execute(
        sa.select(Runner.host, Runner.pid, Runner.since).where(
            Runner.seen_at >= now - timedelta(seconds=SEEN_SECONDS)
        )
    ).one_or_none()
    return RunnerSeen(*row) if row else None


def beat(host: str, pid: int, since: datetime) -> None:
    """The runner says it runs the jobs, now: a job of its own, so it says so only while its
    scheduler really runs jobs."""
    values = {"host": host, "pid": pid, "since": since, "seen_at": clock.utcnow()}
    db.session.execute(sa.update(Runner).where(THE_RUNNER.id == 1).values(values))
    db.session.commit()


def forget(host: str, pid: int) -> None:
    """The runner steps down: clear the row, if it still names this process."""
    mine = (THE_RUNNER.host == host) & (THE_RUNNER.pid == pid)
    cleared = dict.fromkeys(("host", "pid", "since", "seen_at"))
    db.session.execute(sa.update(Runner).where(mine).values(cleared))
    db.session.commit()


def as_json(delivery: Delivery) -> dict[str, Any]:
    return {"status": delivery.status, "database": "ok", "delivery": asdict(delivery)}


@bp.get("/healthz")
@bp.output(HealthOut)
@bp.doc(responses={503: "The database is unreachable"})
def health() -> Any:
    """Report whether the database answers and how email delivery stands; no token needed."""
    try:
        delivery = read()
    except SQLAlchemyError:
        return {"status": "unavailable", "database": "unavailable", "delivery": None}, 503
    return as_json(delivery)
