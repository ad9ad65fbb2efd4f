"""The emails: what each says, its subject, its templates, its unsubscribe link, the thread it
belongs to, and the MIME message written once with the Message-ID chosen when it was queued."""

import binascii
import functools
import random
import re
import sys
from collections import defaultdict
from email import policy
from email.charset import QP, Charset
from email.utils import formatdate
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import flask_mail
import sqlalchemy as sa
from flask import current_app, render_template

from sit import clock
from sit.models import Issue, User
from sit.schemas import issue_page_url
from sit.unsubscribe import unsubscribe_url

STATUS_NAMES = {"O": "open", "C": "closed"}

# Flask-Mail sends UTF-8 bodies as 8-bit text, whose lines may be any length; SMTP servers refuse
# lines over 1,000 characters. Quoted-printable keeps every line short, whatever users wrote.
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP

# What the email package reads as a line break in a body (`str.splitlines` once every other
# control character is encoded); quoted-printable text has only `\n` and, in the message, `\r\n`.
LINE_BREAK = re.compile(r"\r\n?")

# A header whose value is a URL in angle brackets (RFC 2369) may be folded at whitespace only,
# and a URL has none: the SMTP policy would write a long one as encoded words, which no mail
# client reads as a URL. One line is allowed up to 998 characters.
URL_HEADERS = frozenset({"List-Unsubscribe"})
UNFOLDED = policy.SMTP.clone(max_line_length=0)


class Summary(NamedTuple):
    """What an email says about an issue (attributes, which templates read fastest)."""

    issue_id: str
    title: str
    status: str
    creator: str
    url: str
    description: str = ""


Digests = dict[int, list[Summary]]


class Said(NamedTuple):
    """One comment as a comment email tells it."""

    author: str
    body: str
    created_at: str


class Facts(NamedTuple):
    """What a batch of due emails tells, read for the whole batch: each digest's issues (by
    recipient), each comment email's comments (by email, `sit.notifications.email_comments`)."""

    digests: Digests
    comments: dict[int, list[sa.Row[Any]]]


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


def comment_subject(issue: Issue | sa.Row[Any]) -> str:
    """A reply's subject, as mail clients show a conversation's; the issue_id in it as a tag."""
    return one_line(f"Re: [SIT #{issue.issue_id}] {issue.title}")


def thread_id(issue_id: str) -> str:
    """The Message-ID that every email about the issue replies to (`In-Reply-To`, `References`):
    one per issue, derived from its issue_id, so mail clients show its emails as one
    conversation. No email carries it as its own: it names the issue, as GitHub's
    `<owner/repo/issues/N@github.com>` does."""
    domain = urlsplit(current_app.config["PUBLIC_URL"]).hostname
    return f"<issue.{issue_id}@{domain}>"


def digest_subject(count: int) -> str:
    return f"Your SIT digest: {count} issues assigned to you"


def display_name(user: Named) -> str:
    return one_line(f"{user.first_name} {user.last_name}") or user.username


def summary(issue: sa.Row[Any], description: str = "") -> Summary:
    """What an email says about an issue (a row of `issue_facts`)."""
    status, creator = STATUS_NAMES[issue.status], display_name(issue)
    return Summary(
        issue.issue_id, issue.title, status, creator, issue_page_url(issue.id), description
    )


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


def header_line(name: str, value: str) -> bytes:
    """The header folded as the SMTP policy folds it, but a URL header kept on one line."""
    return (UNFOLDED if name in URL_HEADERS else policy.SMTP).fold_binary(name, value)


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
        return b"".join(header_line(name, value) for name, value in fields.items())

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


def message(
    row: sa.Row[Any], subject: str, template: str, thread: str | None = None, **context: Any
) -> Message:
    """The email to the row's recipient as a plain-text and an HTML part (Jinja escapes user
    text in the HTML), each ending with the link that turns this kind of email off (a comment
    email's: that ignores its issue), which the headers of RFC 8058 also give for a mail
    client's one-click unsubscribe. An email about an issue (its `thread`, the issue_id) is a
    reply in the issue's conversation."""
    issue = row.issue_id if row.kind == "comment" else None
    unsubscribe = unsubscribe_url(row.recipient_id, row.kind, issue)
    context |= {"name": display_name(row), "unsubscribe": unsubscribe}
    replying = {"In-Reply-To": thread_id(thread), "References": thread_id(thread)}
    msg = Message(
        subject=subject,
        recipients=[row.to_address],
        body=render_template(f"email/{template}.txt", **context),
        html=render_template(f"email/{template}.html", **context),
        charset=UTF8_QP,
        extra_headers={
            "Auto-Submitted": "auto-generated",
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
        | (replying if thread else {}),
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


def said(comment: sa.Row[Any]) -> Said:
    """A comment (a row of `sit.notifications.email_comments`) as an email tells it."""
    when = comment.created_at.strftime("%Y-%m-%d %H:%M UTC")
    return Said(display_name(comment), comment.body, when)


def build(row: sa.Row[Any], facts: Facts, connection: sa.Connection) -> Message | None:
    """The message as it reads now; None when there is nothing left to tell (the issue, or
    every comment of a comment email, deleted), or the recipient no longer wants it
    (`row.wanted`: `sit.notifications.wanted`)."""
    if not row.wanted:
        return None
    if row.kind == "digest":
        issues = facts.digests.get(row.recipient_id)
        if not issues:
            return None
        return message(row, digest_subject(len(issues)), "digest", issues=issues)
    query = issue_facts(Issue.description).where(Issue.id == row.issue_id)
    issue = connection.execute(query).one_or_none()  # None: deleted
    if issue is None:
        return None
    about = summary(issue, issue.description)
    if row.kind == "assignment":
        subject = assignment_subject(issue)
        return message(row, subject, "assignment", issue.issue_id, issue=about)
    comments = [said(comment) for comment in facts.comments.get(row.id, [])]
    if not comments:
        return None
    subject = comment_subject(issue)
    return message(row, subject, "comment", issue.issue_id, issue=about, comments=comments)


class Draft:
    """A due email's message, built and written once: ahead of its turn, while the server reads
    the message before it, or else when its turn comes."""

    def __init__(self, row: sa.Row[Any], facts: Facts, connection: sa.Connection) -> None:
        self.row, self.facts, self.connection = row, facts, connection
        self.built = False
        self.msg: Message | None = None
        self.error: Exception | None = None

    def build(self) -> None:
        """Never raises (it may run in the middle of an SMTP exchange): `message` raises it."""
        if self.built:
            return
        self.built = True
        try:
            self.msg = build(self.row, self.facts, self.connection)
            if self.msg is not None:
                self.msg.date = clock.timestamp()  # as Flask-Mail's `send` would, just before
                self.msg.as_bytes()
        except Exception as error:
            self.error = error

    def message(self) -> Message | None:
        """:raise: what building it raised."""
        self.build()
        if self.error is not None:
            raise self.error
        return self.msg
