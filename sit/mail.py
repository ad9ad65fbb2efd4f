"""Building and sending emails: the messages, one SMTP connection per pass, retries, and `.eml`
files when no `MAIL_SERVER` is set."""

import contextlib
import logging
import smtplib
import threading
from email.charset import QP, Charset
from pathlib import Path
from typing import Any

import flask_mail
import sqlalchemy as sa
from flask import current_app, render_template

from sit.clock import utcnow
from sit.extensions import db
from sit.models import Email, Issue, User
from sit.schemas import issue_url

log = logging.getLogger(__name__)

BATCH = 100
SMTP_TIMEOUT_SECONDS = 30
STATUS_NAMES = {"O": "open", "C": "closed"}

# Flask-Mail sends UTF-8 bodies as 8-bit text, whose lines may be any length; SMTP servers refuse
# lines over 1,000 characters. Quoted-printable keeps every line short, whatever users wrote.
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP

# The server answered, and refused this one message: the connection is still good for the next.
REFUSALS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)


def one_line(text: str) -> str:
    return " ".join(text.split())


def assignment_subject(issue: Issue) -> str:
    return one_line(f"Issue #{issue.issue_id} assigned to you: {issue.title}")


def digest_subject(count: int) -> str:
    return f"Your SIT digest: {count} issues assigned to you"


def display_name(user: User) -> str:
    return one_line(f"{user.first_name} {user.last_name}") or user.username


def summary(issue: Issue) -> dict[str, Any]:
    """What an email says about an issue."""
    return {
        "issue_id": issue.issue_id,
        "title": issue.title,
        "description": issue.description,
        "status": STATUS_NAMES[issue.status],
        "creator": display_name(issue.creator),
        "url": issue_url(issue.id),
    }


def message(email: Email, subject: str, template: str, **context: Any) -> flask_mail.Message:
    """The email as a plain-text and an HTML part (Jinja escapes user text in the HTML)."""
    context["name"] = display_name(email.recipient)
    msg = flask_mail.Message(
        subject=subject,
        recipients=[email.to_address],
        body=render_template(f"email/{template}.txt", **context),
        html=render_template(f"email/{template}.html", **context),
        charset=UTF8_QP,
        extra_headers={"Auto-Submitted": "auto-generated"},
    )
    msg.msgId = email.message_id
    return msg


def digest_issues(user_id: int) -> list[Issue]:
    """The user's assigned issues, open ones first, then newest first."""
    open_first = sa.case((Issue.status == "O", 0), else_=1)
    query = sa.select(Issue).where(Issue.assigned_to_id == user_id)
    return list(db.session.scalars(query.order_by(open_first, Issue.created_at.desc(), Issue.id)))


def build(email: Email) -> flask_mail.Message | None:
    """The message as it reads now; None when there is nothing left to tell."""
    if email.kind == "assignment":
        if email.issue is None:  # deleted without going through notifications
            return None
        issue = summary(email.issue)
        return message(email, assignment_subject(email.issue), "assignment", issue=issue)
    issues = [summary(issue) for issue in digest_issues(email.recipient_id)]
    if not issues:
        return None
    return message(email, digest_subject(len(issues)), "digest", issues=issues)


class TimedConnection(flask_mail.Connection):
    """Flask-Mail's connection with a timeout, so that a silent server cannot hang the runner."""

    def configure_host(self) -> smtplib.SMTP:
        state = self.mail
        smtp = smtplib.SMTP_SSL if state.use_ssl else smtplib.SMTP
        host = smtp(state.server, state.port, timeout=SMTP_TIMEOUT_SECONDS)
        if state.use_tls:
            host.starttls()
        if state.username and state.password:
            host.login(state.username, state.password)
        return host


class Outgoing:
    """Where one pass's messages go: one SMTP connection, opened on first use, or `.eml` files
    in `<instance>/outbox/` when there is no `MAIL_SERVER`."""

    def __init__(self) -> None:
        self.state = current_app.extensions["mail"]
        self.connection: TimedConnection | None = None

    def send(self, msg: flask_mail.Message) -> None:
        if self.state.server is None:
            self.write_eml(msg)
            return
        if self.connection is None:
            self.connection = TimedConnection(self.state)
            self.connection.host = self.connection.configure_host()
        self.connection.send(msg)

    def write_eml(self, msg: flask_mail.Message) -> None:
        folder = Path(current_app.instance_path) / "outbox"
        folder.mkdir(exist_ok=True)
        path = folder / f"{msg.msgId.strip('<>')}.eml"
        draft = path.with_suffix(".draft")
        draft.write_bytes(msg.as_bytes())
        draft.replace(path)  # a reader never sees half a message
        log.info("no MAIL_SERVER set: wrote %r for %s to %s", msg.subject, msg.recipients[0], path)

    def close(self) -> None:
        if self.connection is not None and self.connection.host is not None:
            # Every message sent was already acknowledged: a failing goodbye loses nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.connection.host.quit()


def describe(error: Exception) -> str:
    """What the SMTP server (or the network) said, in one line."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        error = smtplib.SMTPResponseException(*next(iter(error.recipients.values())))
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        return one_line(f"{error.smtp_code} {text}")
    return one_line(f"{type(error).__name__}: {error}")


def due_emails() -> list[Email]:
    """The next pending emails that are due, oldest due first."""
    query = sa.select(Email).where(Email.state == "pending", Email.due_at <= utcnow())
    return list(db.session.scalars(query.order_by(Email.due_at, Email.id).limit(BATCH)))


def record_failure(email: Email, reason: str) -> None:
    config = current_app.config
    email.mark_failed_attempt(
        reason, utcnow(), config["EMAIL_RETRY_DELAY"], config["EMAIL_RETRY_FOR"]
    )
    log.warning(
        "email %d to %s failed (attempt %d): %s",
        email.id,
        email.to_address,
        email.attempts,
        email.last_error,
    )


class ServerUnavailable(Exception):
    """The SMTP server cannot be reached or will not talk: no message of this pass can go."""


def deliver(email: Email, outgoing: Outgoing) -> bool:
    """Send one email and commit the outcome (never while holding the database's write lock).

    :raise ServerUnavailable: after recording the failure on this email.
    """
    try:
        msg = build(email)
        if msg is None:
            email.state = "cancelled"
        else:
            email.subject = msg.subject
            outgoing.send(msg)
            email.mark_sent(utcnow())
    except REFUSALS as error:
        record_failure(email, describe(error))
    except (OSError, smtplib.SMTPException) as error:
        record_failure(email, describe(error))
        db.session.commit()
        raise ServerUnavailable(email.last_error) from error
    except Exception as error:  # one message that cannot be built must not hold up the others
        log.exception("email %d could not be built or sent", email.id)
        record_failure(email, describe(error))
    db.session.commit()
    return email.state == "sent"


def postpone_due(reason: str) -> None:
    """The server is unavailable: count a failed attempt on every email that is due."""
    while batch := due_emails():
        for email in batch:
            record_failure(email, reason)
        db.session.commit()


def deliver_pass() -> int:
    """One pass over the due emails, on one connection; returns how many were sent."""
    outgoing = Outgoing()
    sent = 0
    try:
        while batch := due_emails():
            sent += sum(deliver(email, outgoing) for email in batch)
    except ServerUnavailable as error:
        postpone_due(str(error))
    finally:
        outgoing.close()
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
