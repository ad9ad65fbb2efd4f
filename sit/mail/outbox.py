"""The outbox pass: the due rows, one SMTP connection for all of them, each outcome committed,
and retries with back-off when a message or the server fails. Each email goes to its recipient as
they are when it is due: at their address then, and only if they still want it."""

import logging
import smtplib
import threading
from typing import Any

import sqlalchemy as sa
from flask import current_app

from sit import clock, metrics, notifications
from sit.extensions import db
from sit.mail.messages import NAME, Draft, Facts, Message, digest_issues
from sit.mail.transport import REFUSALS, Outgoing, describe, nothing
from sit.models import Email, User
from sit.notifications import wanted

log = logging.getLogger(__name__)

BATCH = 100


def due(query: sa.Select[Any]) -> sa.Select[Any]:
    """The next `BATCH` of the query's pending emails that are due, oldest due first."""
    query = query.where(Email.state == "pending", Email.due_at <= clock.utcnow())
    return query.order_by(Email.due_at, Email.id).limit(BATCH)


def due_emails() -> list[Email]:
    """The next due emails still wanted, as ORM objects, to record failed attempts on (the next
    pass cancels the others: they must not fail)."""
    return list(db.session.scalars(due(sa.select(Email).join(Email.recipient).where(wanted()))))


def due_rows(connection: sa.Connection) -> list[sa.Row[Any]]:
    """The next due emails as rows with what sending needs (the recipient's address and name
    now, whether they still want it, the Message-ID): no ORM objects to expire and reload after
    each email's commit."""
    fields = (Email.id, Email.kind, Email.recipient_id, Email.issue_id, Email.message_id)
    fields += (Email.due_at, User.email.label("to_address"), wanted().label("wanted"))
    query = sa.select(*fields, *NAME).join(User, Email.recipient_id == User.id)
    return list(connection.execute(due(query)))


def record_failure(email: Email, reason: str) -> None:
    config = current_app.config
    email.mark_failed_attempt(
        reason, clock.utcnow(), config["EMAIL_RETRY_DELAY"], config["EMAIL_RETRY_FOR"]
    )
    metrics.email_failed(email.kind)
    log.warning(
        "email %d to %s failed (attempt %d): %s",
        email.id,
        email.to_address,
        email.attempts,
        email.last_error,
    )


OUTBOX = Email.__table__
SETTLE = OUTBOX.update().where(OUTBOX.c.id == sa.bindparam("email_id"))


def outcome(msg: Message | None) -> dict[str, Any]:
    """The columns to set once the message was sent (where to), or had nothing left to tell."""
    if msg is None:
        return {"state": "cancelled"}
    return {
        "state": "sent",
        "sent_at": clock.utcnow(),
        "subject": msg.subject,
        "to_address": msg.recipients[0],
    }


def settle(draft: Draft, msg: Message | None, connection: sa.Connection) -> None:
    """Commit the email's outcome with one UPDATE, built once, on the pass's connection (the one
    it reads with): no ORM objects to flush, and no session to end, after each email.

    A comment email's issue is locked first (`comment_posted` takes turns with this), and the
    comments that joined it after it was read go to a follow-up email in the same transaction:
    a comment is left out of no email."""
    row = draft.row
    comment = row.kind == "comment"
    if comment:
        notifications.lock_issue(row.issue_id, connection)
    connection.execute(SETTLE, {"email_id": row.id, **outcome(msg)})
    if comment:
        told = [comment.id for comment in draft.facts.comments.get(row.id, [])]
        notifications.follow_up(row.id, told, connection)
    connection.commit()


def fail(email_id: int, msg: Message | None, reason: str) -> str:
    """Commit a failed attempt on the email (with the subject and address it was tried with);
    returns the error as recorded."""
    email = db.session.get_one(Email, email_id)
    if msg is not None:
        email.subject, email.to_address = msg.subject, msg.recipients[0]
    record_failure(email, reason)
    recorded = email.last_error or reason
    db.session.commit()
    return recorded


class ServerUnavailable(Exception):
    """The SMTP server cannot be reached or will not talk: no message of this pass can go."""


def deliver(
    draft: Draft, following: Draft | None, outgoing: Outgoing, connection: sa.Connection
) -> bool:
    """Send one email (building the following one while the server reads it) and commit the
    outcome (never while holding the database's write lock); returns whether it was sent.

    :raise ServerUnavailable: after recording the failure on this email.
    """
    try:
        msg = draft.message()
        if msg is not None:
            outgoing.send(msg, following.build if following else nothing)
    except REFUSALS as error:
        fail(draft.row.id, draft.msg, describe(error))
    except (OSError, smtplib.SMTPException) as error:
        raise ServerUnavailable(fail(draft.row.id, draft.msg, describe(error))) from error
    except Exception as error:  # one message that cannot be built must not hold up the others
        log.exception("email %d could not be built or sent", draft.row.id)
        fail(draft.row.id, draft.msg, describe(error))
    else:
        settle(draft, msg, connection)
        if msg is not None:
            metrics.email_sent(draft.row)
        return msg is not None
    return False


def postpone_due(reason: str) -> None:
    """The server is unavailable: count a failed attempt on every email that is due."""
    while batch := due_emails():
        for email in batch:
            record_failure(email, reason)
        db.session.commit()


def batch_facts(batch: list[sa.Row[Any]], connection: sa.Connection) -> Facts:
    """What the batch's digests and comment emails tell, in one query each."""
    digests = [row.recipient_id for row in batch if row.kind == "digest"]
    comment_emails = [row.id for row in batch if row.kind == "comment"]
    return Facts(
        digest_issues(digests, connection),
        notifications.email_comments(comment_emails, connection),
    )


def deliver_pass() -> int:
    """One pass over the due emails, on one SMTP connection and one database connection of its
    own; returns how many were sent."""
    outgoing = Outgoing()
    sent = 0
    try:
        with db.engine.connect() as connection:
            while batch := due_rows(connection):
                facts = batch_facts(batch, connection)
                drafts = [Draft(row, facts, connection) for row in batch]
                for draft, following in zip(drafts, [*drafts[1:], None], strict=True):
                    sent += deliver(draft, following, outgoing, connection)
    except ServerUnavailable as error:
        postpone_due(str(error))
    finally:
        outgoing.close()
        db.session.expire_all()  # the outcomes went through another connection than the session's
    return sent


_pass = threading.Lock()
_wanted = threading.Event()


def deliver_due() -> int:
    """Send every pending email that is due; returns how many were sent.

    One pass at a time in this process: a call during a pass makes that pass look once more.
    """
    _wanted.set()
    sent = 0
    while _wanted.is_set() and _pass.acquire(blocking=False):
        try:
            _wanted.clear()
            sent += deliver_pass()
        finally:
            _pass.release()
    return sent
