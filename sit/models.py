"""The data: users, issues and their conversation (comments, events, labels, watchers), failed
logins, the outbox and the runner's heartbeat. Models change themselves; never commit."""

import functools
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import abort
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from sit import sqlite
from sit.clock import utcnow
from sit.extensions import db

MAX_ID = 2**31 - 1  # the largest id an Integer column holds on both databases (int4 on PostgreSQL)
STATUSES = ("O", "C")
MAX_RETRY_DELAY_SECONDS = 3600
# Each kind of email, and the user's column that turns it on or off.
NOTIFY = {
    "assignment": "notify_assignments",
    "digest": "notify_digest",
    "comment": "notify_comments",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite keeps no time zone), read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True
    python_type = datetime

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC).replace(tzinfo=None) if value else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value else value


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(150), unique=True)
    email: Mapped[str] = mapped_column(sa.String(254))
    first_name: Mapped[str] = mapped_column(sa.String(150), default="")
    last_name: Mapped[str] = mapped_column(sa.String(150), default="")
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    token_generation: Mapped[int] = mapped_column(default=0)
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    active: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    notify_assignments: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    notify_digest: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    notify_comments: Mapped[bool] = mapped_column(default=True, server_default=sa.true())

    def change(self, fields: dict[str, Any]) -> None:
        """Set the given fields; deactivating also revokes every token, so that reactivating
        the account later revives none of them."""
        for name, value in fields.items():
            setattr(self, name, value)
        if fields.get("active") is False:
            self.revoke_tokens()

    def unsubscribe(self, kind: str) -> None:
        """Turn one kind of email (a key of `NOTIFY`) off."""
        setattr(self, NOTIFY[kind], False)

    def set_password(self, password: str) -> None:
        """Store a scrypt hash; tokens issued under the old password stop working."""
        self.password_hash = generate_password_hash(password)
        self.revoke_tokens()

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far: they carry the old generation."""
        self.token_generation = (self.token_generation or 0) + 1


@functools.cache
def by_id(model: type[db.Model], lock: bool = False) -> sa.Select[Any]:
    """The query of one row by its id, built once (SQLAlchemy then reuses its compiled form);
    the rows it relates to are loaded only if used: a change needs none, and the ORM's flush
    then has one object to look at (patch req/s, `bench/RESULTS.md`). With `lock`, `FOR UPDATE`
    of that row."""
    query = sa.select(model).where(model.id == sa.bindparam("pk")).options(sa.orm.lazyload("*"))
    return query.with_for_update(of=model) if lock else query


def get_or_404(
    model: type[db.Model],
    pk: int,
    read: sa.Select[Any] | None = None,
    *,
    lock: bool = False,
    **params: Any,
) -> Any:
    """The row with this id: its ORM object, to change it, or, given `read` (a Core query of
    `:pk`, and of `params` if it has more parameters), the row that query reads, only to answer
    with it (twice as fast).

    With `lock`, no other transaction changes the row from this read until this one ends:
    `FOR UPDATE` on PostgreSQL, SQLite's write lock taken first on SQLite. An issue's own change
    needs none (`sit.issues.change_own_issue` checks the version in its UPDATE); a comment, and
    the watchers it reads, take turns with the outbox settling a comment email.

    :raise 404: there is none, or the id is beyond what an id column holds (`MAX_ID`).
    """
    row = None
    if lock:
        sqlite.begin_write(db.session)
    if 1 <= pk <= MAX_ID and read is None:
        row = db.session.execute(by_id(model, lock), {"pk": pk}).scalar_one_or_none()
    elif 1 <= pk <= MAX_ID:
        row = db.session.connection().execute(read, {"pk": pk, **params}).one_or_none()
    if row is None:
        abort(404, f"There is no {model.__name__.lower()} {pk}.")
    return row


def new_issue_id() -> str:
    return secrets.token_hex(6)


# A listing filters on at most these columns and sorts by these, id breaking ties: one index
# for each filter (or none) with each sort serves any listing's page in index order.
FILTERED = ("status", "assigned_to_id", "created_by_id")
SORTED = ("created_at", "updated_at")
LISTING_INDEXES = [
    *[(column, "id") for column in FILTERED],
    *[(*prefix, sort, "id") for prefix in ((), *((c,) for c in FILTERED)) for sort in SORTED],
]


class Issue(db.Model):
    __tablename__ = "issues"
    __table_args__ = (
        *(sa.Index(f"ix_issues_{'_'.join(columns)}", *columns) for columns in LISTING_INDEXES),
        {"sqlite_autoincrement": True},  # a deleted issue's URL is never reused
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[str] = mapped_column(sa.String(12), unique=True, default=new_issue_id)
    title: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(1), default="O")
    assigned_to_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column()
    comment_count: Mapped[int] = mapped_column(default=0, server_default="0")  # `comments`

    creator: Mapped[User] = relationship(
        foreign_keys=[created_by_id], lazy="joined", innerjoin=True
    )
    # passive_deletes: the database drops a deleted issue's labelling (ON DELETE CASCADE)
    labels: Mapped[list["Label"]] = relationship(
        secondary=lambda: issue_labels, passive_deletes=True
    )

    # Every UPDATE and DELETE says "WHERE version = <the version read>", and bumps the version
    # (the ETag's): a change made after the read fails (`StaleDataError`) and writes nothing,
    # and `sit.issues.change_own_issue` reads the issue again and retries.
    __mapper_args__ = {"version_id_col": version}

    @hybrid_property
    def etag(self) -> str:
        """Changes whenever the issue changes, and differs between issues."""
        return f"{self.issue_id}-{self.version}"

    @etag.inplace.expression
    @classmethod
    def _etag(cls) -> sa.ColumnElement[str]:
        """The same, computed by the database, for queries that read columns."""
        return cls.issue_id + "-" + sa.cast(cls.version, sa.String)

    @classmethod
    def having(cls, values: dict[str, Any]) -> list[sa.ColumnElement[bool]]:
        """Each column equal to its value (None: IS NULL), to filter issues by."""
        return [getattr(cls, column) == value for column, value in values.items()]

    def change(self, fields: dict[str, Any]) -> None:
        """Set the given writable fields (`assigned_to` is a user id or None, `labels` a list of
        `Label`s). A new set of labels counts as a change of the issue's row too: it moves
        `updated_at`, and so the version (the ETag)."""
        for name, value in fields.items():
            if name == "labels":
                self.relabel(value)
            else:
                setattr(self, "assigned_to_id" if name == "assigned_to" else name, value)

    def relabel(self, labels: list["Label"]) -> None:
        """A new set of labels (the same set again changes nothing): an existing issue's
        `updated_at` moves, and so its version."""
        if set(labels) != set(self.labels):
            self.labels = labels
            if self.id is not None:  # a new issue's row is written anyway, with its created_at
                self.updated_at = utcnow()


# Only whether the issue exists, for `get_or_404(Issue, pk, ISSUE_EXISTS)` before listing its
# comments or history.
ISSUE_EXISTS = sa.select(Issue.id).where(Issue.id == sa.bindparam("pk"))


class Comment(db.Model):
    """A comment on an issue; deleted with it."""

    __tablename__ = "comments"
    __table_args__ = (
        sa.Index("ix_comments_issue_id_id", "issue_id", "id"),  # an issue's comments, in order
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[int] = mapped_column(sa.ForeignKey("issues.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column()

    author: Mapped[User] = relationship(lazy="joined", innerjoin=True)
    issue: Mapped[Issue] = relationship()

    __mapper_args__ = {"version_id_col": version}  # the ETag's, as for issues

    @property
    def etag(self) -> str:
        """Changes whenever the comment changes, and differs between comments."""
        return f"comment-{self.id}-{self.version}"

    def edit(self, body: str, now: datetime) -> None:
        """A new text, edited `now`; the same text again changes nothing."""
        if body != self.body:
            self.body, self.updated_at = body, now


class Event(db.Model):
    """One thing that happened to an issue (§13's kinds), written in the transaction of the
    change it records, never edited, deleted only with its issue. `details` holds the kind's
    own fields (`from`, `to`, `label`, `comment`)."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_issue_id_id", "issue_id", "id"),  # an issue's history, in order
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[int] = mapped_column(sa.ForeignKey("issues.id", ondelete="CASCADE"))
    actor_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    event: Mapped[str] = mapped_column(sa.String(20))
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    actor: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Label(db.Model):
    """A label admins manage; names are unique ignoring case (`folded`, `str.casefold`, which
    SQLite's `lower()` is not for letters beyond ASCII)."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    folded: Mapped[str] = mapped_column(sa.String(50), unique=True)
    color: Mapped[str] = mapped_column(sa.String(7), default="#ededed")
    description: Mapped[str] = mapped_column(sa.String(255), default="")

    def rename(self, name: str) -> None:
        self.name, self.folded = name, name.casefold()


issue_labels = sa.Table(
    "issue_labels",
    db.metadata,
    sa.Column("issue_id", sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("label_id", sa.ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_issue_labels_label_id_issue_id", "label_id", "issue_id"),  # `?label=`
)


class Subscription(db.Model):
    """A user's explicit choice about one issue: watching it (`ignored` false) or ignoring it,
    which beats the automatic reasons (creator, assignee, commented)."""

    __tablename__ = "subscriptions"

    issue_id: Mapped[int] = mapped_column(
        sa.ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True, index=True)
    ignored: Mapped[bool] = mapped_column(default=False)


class LoginFailure(db.Model):
    """One failed login, kept for the throttle's window; shared by every worker and host. Counted
    by username, and by client address against password spraying."""

    __tablename__ = "login_failures"
    __table_args__ = (
        sa.Index("ix_login_failures_username_failed_at", "username", "failed_at"),
        sa.Index("ix_login_failures_address_failed_at", "address", "failed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(150))
    address: Mapped[str | None] = mapped_column(sa.String(45))  # an IPv6 address at most
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Email(db.Model):
    """One email in the outbox. The row is the truth; a scheduler job only says when to look.

    `pending` until sent (`sent`), superseded (`cancelled`) or given up on after failing for
    `EMAIL_RETRY_FOR` (`failed`). While it fails, `due_at` is its next attempt.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index("ix_outbox_state_due_at", "state", "due_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(10))  # a key of `NOTIFY`
    state: Mapped[str] = mapped_column(sa.String(10), default="pending")
    recipient_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    to_address: Mapped[str] = mapped_column(sa.String(254))
    issue_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("issues.id", ondelete="SET NULL"), index=True
    )
    subject: Mapped[str] = mapped_column(sa.String(400))
    message_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its failed attempt

    recipient: Mapped[User] = relationship()
    issue: Mapped[Issue | None] = relationship()

    def mark_failed_attempt(
        self, error: str, now: datetime, first_retry: int, retry_for: int
    ) -> None:
        """Count a failed attempt: retry after a delay that doubles each time (at most an hour),
        or give up once it has been failing for `retry_for` seconds."""
        self.attempts += 1
        self.last_error = error[:500]
        self.last_error_at = now
        self.failing_since = self.failing_since or now
        if now - self.failing_since >= timedelta(seconds=retry_for):
            self.state = "failed"
        else:
            delay = min(first_retry * 2 ** (self.attempts - 1), MAX_RETRY_DELAY_SECONDS)
            self.due_at = now + timedelta(seconds=delay)


# The comments a pending comment email tells (`sit.notifications.comment_posted`); a deleted
# comment leaves every email it was in.
outbox_comments = sa.Table(
    "outbox_comments",
    db.metadata,
    sa.Column("email_id", sa.ForeignKey("outbox.id", ondelete="CASCADE"), primary_key=True),
    sa.Column(
        "comment_id", sa.ForeignKey("comments.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)


class Runner(db.Model):
    """The one row saying which process runs the jobs: written by that process every few
    seconds (`sit.health.beat`), read by every worker on every host (`sit.health.read`)."""

    __tablename__ = "runner"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1: migration 0003 adds the row
    host: Mapped[str | None] = mapped_column(sa.String(255))
    pid: Mapped[int | None] = mapped_column()
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it took over
    seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its latest heartbeat


class Webhook(db.Model):
    """An endpoint that other systems give SIT to post messages to (§14). `failing_since`: the
    first failed delivery since the last one that succeeded; `disabled_reason`: why SIT
    deactivated it, until an admin activates it again."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(sa.String(2000))
    events: Mapped[list[str]] = mapped_column(sa.JSON)
    active: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str] = mapped_column(sa.String(255), default="")
    secret: Mapped[str] = mapped_column(sa.String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text)

    def wants(self, kind: str) -> bool:
        return self.active and ("*" in self.events or kind in self.events)

    def change(self, fields: dict[str, Any]) -> None:
        """Set the given fields; activating it again forgets why it was deactivated."""
        for name, value in fields.items():
            setattr(self, name, value)
        if fields.get("active"):
            self.failing_since = self.disabled_reason = None


class WebhookMessage(db.Model):
    """One message to one webhook, stored in the transaction of the change it tells of. Its
    `msg_id` is its `webhook-id` on every attempt. `pending` until a 2xx (`delivered`) or the
    retry schedule's end (`failed`); while it fails, `due_at` is its next attempt."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        sa.Index("ix_webhook_messages_state_due_at", "state", "due_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    msg_id: Mapped[str] = mapped_column(sa.String(40), unique=True)
    type: Mapped[str] = mapped_column(sa.String(20))
    body: Mapped[str] = mapped_column(sa.Text)  # the JSON sent, exactly as signed
    state: Mapped[str] = mapped_column(sa.String(10), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)


class WebhookDelivery(db.Model):
    """One attempt to deliver a message: the delivery log (what was sent, what came back)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(sa.ForeignKey("webhooks.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(
        sa.ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column()
    state: Mapped[str] = mapped_column(sa.String(10))  # "delivered" or "failed"
    request_headers: Mapped[dict[str, str]] = mapped_column(sa.JSON)
    response_status: Mapped[int | None] = mapped_column()
    response_body: Mapped[str | None] = mapped_column(sa.Text)  # its first 4 KiB
    duration: Mapped[float] = mapped_column(sa.Float)  # seconds
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)

    message: Mapped[WebhookMessage] = relationship(lazy="joined", innerjoin=True)
