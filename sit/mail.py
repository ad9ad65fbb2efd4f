"""Building and sending emails: the messages, one SMTP connection per pass, retries, and `.eml`
files when no `MAIL_SERVER` is set."""

import binascii
import contextlib
import functools
import logging
import random
import re
import smtplib
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from email import policy
from email.charset import QP, Charset
from email.utils import formatdate
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import flask_mail
import sqlalchemy as sa
from flask import current_app, render_template

from sit import metrics
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

# What the email package reads as a line break in a body (`str.splitlines` once every other
# control character is encoded); quoted-printable text has only `\n` and, in the message, `\r\n`.
LINE_BREAK = re.compile(r"\r\n?")

# The server answered, and refused this one message: the connection is still good for the next.
REFUSALS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)


class Summary(NamedTuple):
    """What an email says about an issue (attributes, which templates read fastest)."""

    issue_id: str
    title: str
    status: str
    creator: str
    url: str
    description: str = ""


Digests = dict[int, list[Summary]]


class Named(Protocol):
    """A user, or a row with a user's name columns."""

    username: str
    first_name: str
    last_name: str


NAME = (User.username, User.first_name, User.last_name)  # a user's columns `Named` reads


def one_line(text: str) -> str:
    return " ".join(text.split())


def assignment_subject(issue: Issue | sa.Row[Any]) -> str:
    return one_line(f"Issue #{issue.issue_id} assigned to you: {issue.title}")


def digest_subject(count: int) -> str:
    return f"Your SIT digest: {count} issues assigned to you"


def display_name(user: Named) -> str:
    return one_line(f"{user.first_name} {user.last_name}") or user.username


def summary(issue: sa.Row[Any], description: str = "") -> Summary:
    """What an email says about an issue (a row of `issue_facts`)."""
    status, creator = STATUS_NAMES[issue.status], display_name(issue)
    return Summary(issue.issue_id, issue.title, status, creator, issue_url(issue.id), description)


def boundary() -> str:
    """A MIME boundary as the email package makes them. It cannot occur in a quoted-printable
    body, where every `=` of the text is written `=3D`, so the bodies need no search for it."""
    return f"{'=' * 15}{random.randrange(sys.maxsize):019d}=="


def quoted_printable(text: str) -> bytes:
    """The text in UTF-8, quoted-printable, with CRLF line breaks, by binascii's C encoder: the
    same text once decoded as the email package's (pure Python) encoder gives, every line at most
    76 characters; only some choices of what to escape and where to break lines differ."""
    lines = LINE_BREAK.sub("\n", text).encode()
    return binascii.b2a_qp(lines, istext=True).replace(b"\n", b"\r\n")


def text_part(subtype: str, text: str) -> bytes:
    """A `text/<subtype>` part in UTF-8, quoted-printable (so no line is over 76 characters)."""
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "MIME-Version: 1.0\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
    )
    return head.encode() + quoted_printable(text)


@functools.cache
def from_field(sender: str | tuple[str, str]) -> str:
    """The From header's value, as Flask-Mail writes it (the same for every message)."""
    return flask_mail.sanitize_address(sender, UTF8_QP)


class Message(flask_mail.Message):
    """Flask-Mail's message with a plain-text and an HTML body in UTF-8, quoted-printable,
    written out directly.

    The message is the one Flask-Mail's `as_bytes` writes (multipart/mixed around
    multipart/alternative, the same headers folded by the same policy, the same text once
    decoded) but for the random boundaries and the quoted-printable encoder's choices: the
    email package's generator parses each MIME header again whenever it reads one, and encodes
    in pure Python, which took most of the time of building a digest.
    """

    def header_lines(self) -> bytes:
        """Subject, From, To, Date, Message-ID and the extra headers, as Flask-Mail sets them."""
        fields = {
            "Subject": flask_mail.sanitize_subject(self.subject, UTF8_QP),
            "From": from_field(self.sender),
            "To": ", ".join(set(flask_mail.sanitize_addresses(self.recipients, UTF8_QP))),
            "Date": formatdate(self.date, localtime=True),
            "Message-ID": self.msgId,
        } | (self.extra_headers or {})
        return b"".join(policy.SMTP.fold_binary(name, value) for name, value in fields.items())

    def as_bytes(self) -> bytes:
        return self.written

    @functools.cached_property
    def written(self) -> bytes:
        """The message, written once (ahead of its turn, see `Draft`); `date` must be set."""
        mixed, alternative = boundary(), boundary()
        head = f'Content-Type: multipart/mixed; boundary="{mixed}"\r\nMIME-Version: 1.0\r\n'
        return b"".join((
            head.encode(),
            self.header_lines(),
            f"\r\n--{mixed}\r\n"
            f'Content-Type: multipart/alternative;\r\n boundary="{alternative}"\r\n'
            "MIME-Version: 1.0\r\n"
            f"\r\n--{alternative}\r\n".encode(),
            text_part("plain", self.body or ""),
            f"\r\n--{alternative}\r\n".encode(),
            text_part("html", self.html or ""),
            f"\r\n--{alternative}--\r\n\r\n--{mixed}--\r\n".encode(),
        ))  # fmt: skip


def message(row: sa.Row[Any], subject: str, template: str, **context: Any) -> Message:
    """The email to the row's recipient as a plain-text and an HTML part (Jinja escapes user
    text in the HTML)."""
    context["name"] = display_name(row)
    msg = Message(
        subject=subject,
        recipients=[row.to_address],
        body=render_template(f"email/{template}.txt", **context),
        html=render_template(f"email/{template}.html", **context),
        charset=UTF8_QP,
        extra_headers={"Auto-Submitted": "auto-generated"},
    )
    msg.msgId = row.message_id
    return msg


def issue_facts(*columns: Any) -> sa.Select[Any]:
    """Issues with what emails tell of them, and their creator's name, plus `columns`."""
    fields = (Issue.id, Issue.issue_id, Issue.title, Issue.status, *columns)
    return sa.select(*fields, *NAME).join(User, Issue.created_by_id == User.id)


def digest_issues(user_ids: list[int], connection: sa.Connection) -> Digests:
    """Each of these users' assigned issues, open ones first, then newest first: one query for
    a whole batch of digests."""
    if not user_ids:
        return {}
    open_first = sa.case((Issue.status == "O", 0), else_=1)
    query = issue_facts(Issue.assigned_to_id).where(Issue.assigned_to_id.in_(user_ids))
    query = query.order_by(Issue.assigned_to_id, open_first, Issue.created_at.desc(), Issue.id)
    issues: Digests = defaultdict(list)
    for issue in connection.execute(query):
        issues[issue.assigned_to_id].append(summary(issue))
    return issues


def build(row: sa.Row[Any], digests: Digests, connection: sa.Connection) -> Message | None:
    """The message as it reads now; None when there is nothing left to tell."""
    if row.kind == "assignment":
        query = issue_facts(Issue.description).where(Issue.id == row.issue_id)
        issue = connection.execute(query).one_or_none()  # None: deleted
        if issue is None:
            return None
        facts = summary(issue, issue.description)
        return message(row, assignment_subject(issue), "assignment", issue=facts)
    issues = digests.get(row.recipient_id)
    if not issues:
        return None
    return message(row, digest_subject(len(issues)), "digest", issues=issues)


class Draft:
    """A due email's message, built and written once: ahead of its turn, while the server reads
    the message before it, or else when its turn comes."""

    def __init__(self, row: sa.Row[Any], digests: Digests, connection: sa.Connection) -> None:
        self.row, self.digests, self.connection = row, digests, connection
        self.built = False
        self.msg: Message | None = None
        self.error: Exception | None = None

    def build(self) -> None:
        """Never raises (it may run in the middle of an SMTP exchange): `message` raises it."""
        if self.built:
            return
        self.built = True
        try:
            self.msg = build(self.row, self.digests, self.connection)
            if self.msg is not None:
                self.msg.date = time.time()  # as Flask-Mail's `send` would, just before
                self.msg.as_bytes()
        except Exception as error:
            self.error = error

    def message(self) -> Message | None:
        """:raise: what building it raised."""
        self.build()
        if self.error is not None:
            raise self.error
        return self.msg


def nothing() -> None:
    pass


END_OF_DATA = b"\r\n.\r\n"  # what `data` sends last: no line of a message is a lone "."


class SMTP(smtplib.SMTP):
    """smtplib's client, which does `meanwhile` once a message is out, while the server reads it
    and before its answer is read: building the next message then costs no time of its own."""

    meanwhile: Callable[[], None] = staticmethod(nothing)

    def send(self, s: bytes | str) -> None:
        super().send(s)
        if isinstance(s, bytes) and s.endswith(END_OF_DATA):
            self.meanwhile()


class SMTP_SSL(SMTP, smtplib.SMTP_SSL):
    """The same over TLS from the start (`MAIL_USE_SSL`)."""


class TimedConnection(flask_mail.Connection):
    """Flask-Mail's connection with a timeout, so that a silent server cannot hang the runner."""

    host: SMTP | None

    def configure_host(self) -> SMTP:
        state = self.mail
        smtp = SMTP_SSL if state.use_ssl else SMTP
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

    def send(self, msg: Message, meanwhile: Callable[[], None]) -> None:
        """Send the message, doing `meanwhile` while the server reads it."""
        if self.state.server is None:
            self.write_eml(msg)
            meanwhile()
            return
        if self.connection is None:
            self.connection = TimedConnection(self.state)
            self.connection.host = self.connection.configure_host()
        self.connection.host.meanwhile = meanwhile
        self.connection.send(msg)  # Flask-Mail's own: its checks, signal and reconnections

    def write_eml(self, msg: Message) -> None:
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


def due(query: sa.Select[Any]) -> sa.Select[Any]:
    """The next `BATCH` of the query's pending emails that are due, oldest due first."""
    query = query.where(Email.state == "pending", Email.due_at <= utcnow())
    return query.order_by(Email.due_at, Email.id).limit(BATCH)


def due_emails() -> list[Email]:
    """The next due emails as ORM objects, to record failed attempts on."""
    return list(db.session.scalars(due(sa.select(Email))))


def due_rows(connection: sa.Connection) -> list[sa.Row[Any]]:
    """The next due emails as rows with what sending needs (the address, the Message-ID, the
    recipient's name): no ORM objects to expire and reload after each email's commit."""
    fields = (Email.id, Email.kind, Email.recipient_id, Email.to_address, Email.issue_id)
    fields += (Email.message_id, Email.due_at)
    query = sa.select(*fields, *NAME).join(User, Email.recipient_id == User.id)
    return list(connection.execute(due(query)))


def record_failure(email: Email, reason: str) -> None:
    config = current_app.config
    email.mark_failed_attempt(
        reason, utcnow(), config["EMAIL_RETRY_DELAY"], config["EMAIL_RETRY_FOR"]
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
    """The columns to set once the message was sent, or had nothing left to tell."""
    if msg is None:
        return {"state": "cancelled"}
    return {"state": "sent", "sent_at": utcnow(), "subject": msg.subject}


def settle(email_id: int, msg: Message | None, connection: sa.Connection) -> None:
    """Commit the email's outcome with one UPDATE, built once, on the pass's connection (the one
    it reads with): no ORM objects to flush, and no session to end, after each email."""
    connection.execute(SETTLE, {"email_id": email_id, **outcome(msg)})
    connection.commit()


def fail(email_id: int, msg: Message | None, reason: str) -> str:
    """Commit a failed attempt on the email (with the subject it was tried with); returns the
    error as recorded."""
    email = db.session.get_one(Email, email_id)
    if msg is not None:
        email.subject = msg.subject
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
        settle(draft.row.id, msg, connection)
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


def digest_recipients(batch: list[sa.Row[Any]]) -> list[int]:
    return [row.recipient_id for row in batch if row.kind == "digest"]


def deliver_pass() -> int:
    """One pass over the due emails, on one SMTP connection and one database connection of its
    own; returns how many were sent."""
    outgoing = Outgoing()
    sent = 0
    try:
        with db.engine.connect() as connection:
            while batch := due_rows(connection):
                digests = digest_issues(digest_recipients(batch), connection)
                drafts = [Draft(row, digests, connection) for row in batch]
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
