"""Building and sending emails to a real SMTP sink: content, timing, digests, retries, files."""

import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import flask_mail
import pytest
from conftest import outbox

from sit import jobs, mail, notifications
from sit.extensions import db
from sit.models import MAX_RETRY_DELAY_SECONDS, Email, Issue

HOSTILE = '<script>alert(1)</script> & "x"'
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;x&#34;"
LONG_TITLE = ("Ünïcödé " + HOSTILE + " " + "wörd " * 60)[:255]
# What quoted-printable and SMTP must carry through: every kind of line break, long lines of
# non-ASCII, "=" and what looks like an escape, trailing blanks, and lines that are or start with
# the end-of-data dot.
TRICKY = (
    f"{HOSTILE}\r\n{'é' * 3000}\rtrailing blanks \t\n= and =3D and =\n.\n.leading dot\n"
    f"{'x' * 75}=\n{'y' * 74}é\n\ttab  \r\n\r\nlast line.\n.\n"
)


class Clock:
    """The clock of notifications and mail, stopped until a test moves it."""

    def __init__(self):
        self.now = datetime.now(UTC).replace(microsecond=0)

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(app, monkeypatch):
    stopped = Clock()
    for where in ("sit.notifications.utcnow", "sit.mail.utcnow"):
        monkeypatch.setattr(where, lambda: stopped.now)
    return stopped


def deliver_after(clock, seconds):
    clock.advance(seconds)
    return mail.deliver_due()


def deliver_when_due(app, clock):
    """Move the clock to when assignment emails queued now are due, and send what is due."""
    return deliver_after(clock, app.config["ASSIGNMENT_EMAIL_DELAY"])


# the assignment email


def test_assignment_email_says_who_what_and_where(app, mail_to_sink, new_issue, clock):
    issue = new_issue(title="Printer on fire", description="Smoke from tray 2")
    assert deliver_when_due(app, clock) == 1
    (received,) = mail_to_sink.received
    (email,) = outbox()
    assert received.to == ["bob@example.com"]
    assert received.message["To"] == "bob@example.com"
    assert received.subject == f"Issue #{issue['issue_id']} assigned to you: Printer on fire"
    assert received.message["Message-ID"] == email.message_id
    for subtype in ("plain", "html"):
        text = received.part(subtype)
        assert "Hello Bob Builder," in text, subtype
        assert f"#{issue['issue_id']}" in text, subtype
        for fact in ("Printer on fire", "Smoke from tray 2", "open", "Alice Liddell"):
            assert fact in text, (subtype, fact)
        assert f"http://sit.test/api/{issue['id']}/" in text, subtype


def test_user_text_is_escaped_in_html_and_verbatim_in_text(app, mail_to_sink, new_issue, clock):
    new_issue(title=HOSTILE, description=f"{HOSTILE}\nsecond line")
    deliver_when_due(app, clock)
    (received,) = mail_to_sink.received
    html, text = received.part("html"), received.part("plain")
    assert html.count(ESCAPED) == 2 and "<script>" not in html
    assert text.count(HOSTILE) == 2 and "&lt;" not in text
    assert received.subject.endswith(HOSTILE)


def test_an_email_is_sent_when_due_not_before_and_once(app, mail_to_sink, new_issue, clock):
    new_issue()
    assert mail.deliver_due() == 0
    assert deliver_after(clock, app.config["ASSIGNMENT_EMAIL_DELAY"] - 1) == 0
    assert mail_to_sink.received == []
    assert deliver_after(clock, 1) == 1
    assert mail.deliver_due() == 0
    assert len(mail_to_sink.received) == 1
    (email,) = outbox()
    assert (email.state, email.sent_at, email.attempts) == ("sent", clock.now, 0)


def test_a_long_single_line_description_arrives_whole(app, mail_to_sink, new_issue, clock):
    description = "".join(f"word{n} " for n in range(1000))[:5000]
    assert "\n" not in description and len(description) == 5000
    new_issue(description=description)
    assert deliver_when_due(app, clock) == 1
    (received,) = mail_to_sink.received
    assert description in received.part("plain")
    assert description in received.part("html")


@pytest.mark.parametrize(
    ("how", "recipients"),
    [("unassign", []), ("reassign", ["alice@example.com"]), ("delete", [])],
)
def test_a_superseded_email_is_never_sent(
    app, client, as_alice, alice, mail_to_sink, new_issue, clock, how, recipients
):
    url = f"/api/{new_issue()['id']}/"
    supersede = {
        "unassign": lambda: client.patch(url, json={"assigned_to": None}, headers=as_alice),
        "reassign": lambda: client.patch(url, json={"assigned_to": alice.id}, headers=as_alice),
        "delete": lambda: client.delete(url, headers=as_alice),
    }[how]
    assert supersede().status_code in (200, 204)
    deliver_when_due(app, clock)
    assert [r.to[0] for r in mail_to_sink.received] == recipients
    assert outbox()[0].state == "cancelled"


# without MAIL_SERVER


def test_without_a_mail_server_an_email_becomes_an_eml_file(app, new_issue, clock):
    assert app.config["MAIL_SERVER"] is None
    issue = new_issue(title="Printer on fire")
    assert deliver_when_due(app, clock) == 1
    (email,) = outbox()
    assert email.state == "sent"
    (path,) = (Path(app.instance_path) / "outbox").iterdir()
    assert path.name == f"{email.message_id.strip('<>')}.eml"
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "bob@example.com"
    assert message["Message-ID"] == email.message_id
    assert message["Subject"] == f"Issue #{issue['issue_id']} assigned to you: Printer on fire"
    assert "Printer on fire" in message.get_body(preferencelist=("plain",)).get_content()


# digests


def assign(creator, assignee, *statuses, start):
    """Issues created by `creator` for `assignee`, one a minute from `start`, with no email."""
    issues = [
        Issue(
            title=f"Digest item {n}",
            status=status,
            creator=creator,
            assigned_to_id=assignee.id,
            created_at=start + timedelta(minutes=n),
        )
        for n, status in enumerate(statuses)
    ]
    db.session.add_all(issues)
    db.session.commit()
    return issues


def link(issue):
    return f"http://sit.test/api/{issue.id}/"


def issue_blocks(text, issues):
    """The text about each issue, in the order the text has them: from its id or link (whichever
    comes first) to the next issue's."""
    starts = sorted((min(text.index(f"#{i.issue_id}"), text.index(link(i))), i) for i in issues)
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return {issue: text[start:end] for (start, issue), end in zip(starts, ends, strict=True)}


def test_digest_lists_each_users_issues_open_first_then_newest(
    mail_to_sink, alice, bob, carol, clock
):
    oldest_open, older_closed, newer_open, newest_closed = assign(
        alice, bob, "O", "C", "O", "C", start=clock.now
    )
    assign(alice, carol, "C", start=clock.now)
    assert jobs.send_digest() == (2, 2)
    to_bob, to_carol = sorted(mail_to_sink.received, key=lambda r: r.to)
    assert to_bob.to == ["bob@example.com"] and to_carol.to == ["carol@example.com"]
    assert to_bob.subject == "Your SIT digest: 4 issues assigned to you"
    assert to_carol.subject == "Your SIT digest: 1 issues assigned to you"
    expected = [newer_open, oldest_open, newest_closed, older_closed]
    for subtype in ("plain", "html"):
        text = to_bob.part(subtype)
        assert "Hello Bob Builder," in text, subtype
        blocks = issue_blocks(text, expected)
        assert list(blocks) == expected, subtype
        for issue, block in blocks.items():
            status = {"O": "open", "C": "closed"}[issue.status]
            for fact in (f"#{issue.issue_id}", issue.title, status, "Alice Liddell", link(issue)):
                assert fact in block, (subtype, fact)


def test_a_digest_run_uses_one_smtp_connection(mail_to_sink, alice, bob, carol, clock):
    for user in (alice, bob, carol):
        assign(alice, user, "O", start=clock.now)
    assert jobs.send_digest() == (3, 3)
    assert len({received.peer for received in mail_to_sink.received}) == 1
    assert sorted(r.to[0] for r in mail_to_sink.received) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]


def test_no_digest_for_a_user_without_issues(mail_to_sink, alice, bob, clock):
    assign(alice, bob, "O", start=clock.now)
    assert jobs.send_digest() == (1, 1)
    assert [r.to for r in mail_to_sink.received] == [["bob@example.com"]]


def due_messages():
    """The messages of the emails due now, as a pass builds them."""
    with db.engine.connect() as connection:
        rows = mail.due_rows(connection)
        digests = mail.digest_issues(mail.digest_recipients(rows), connection)
        return [mail.build(row, digests, connection) for row in rows]


BOUNDARY = re.compile(rb"={15}[0-9]{19}==")


def without_boundaries(data):
    """The message with each MIME boundary replaced by its rank (they are random)."""
    seen = {}
    return BOUNDARY.sub(lambda m: b"boundary-%d" % seen.setdefault(m[0], len(seen)), data)


def mime_parts(data):
    """Each part of the message in order: its headers as written (boundaries numbered), preamble,
    epilogue and decoded body."""
    message = message_from_bytes(without_boundaries(data), policy=policy.compat32)
    return [
        (part.items(), part.preamble, part.epilogue, part.get_payload(decode=True))
        for part in message.walk()
    ]


def test_messages_are_written_as_flask_mail_writes_them(app, alice, bob, new_issue, clock):
    new_issue(title=LONG_TITLE, description=TRICKY)
    assign(alice, bob, "O", "C", start=clock.now)
    notifications.queue_digests()
    clock.advance(app.config["ASSIGNMENT_EMAIL_DELAY"])
    messages = due_messages()
    assert sorted(msg.subject[:4] for msg in messages) == ["Issu", "Your"]
    for msg in messages:
        msg.date = clock.now.timestamp()
        ours, flask_mails = msg.as_bytes(), flask_mail.Message.as_bytes(msg)
        assert mime_parts(ours) == mime_parts(flask_mails)
        assert len(mime_parts(ours)) == 4  # mixed, alternative, plain, html
        assert all(len(line) <= 998 for line in ours.split(b"\r\n"))
        assert b"\r" not in ours.replace(b"\r\n", b"") and b"\n" not in ours.replace(b"\r\n", b"")
        for part in message_from_bytes(ours, policy=policy.compat32).walk():
            if not part.is_multipart():
                assert all(len(line) <= 76 for line in part.get_payload().split("\r\n"))


def test_tricky_text_arrives_as_flask_mail_would_send_it(app, mail_to_sink, new_issue, clock):
    issue = new_issue(title=LONG_TITLE, description=TRICKY)
    clock.advance(app.config["ASSIGNMENT_EMAIL_DELAY"])
    (msg,) = due_messages()
    flask_mails = message_from_bytes(flask_mail.Message.as_bytes(msg), policy=policy.default)
    assert mail.deliver_due() == 1
    (received,) = mail_to_sink.received
    for subtype in ("plain", "html"):
        expected = flask_mails.get_body(preferencelist=(subtype,)).get_content()
        assert received.part(subtype) == expected, subtype
    lines = TRICKY.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert "\r\n".join(lines) in received.part("plain")  # each line break arrives as CRLF
    title = mail.one_line(LONG_TITLE)
    assert received.subject == f"Issue #{issue['issue_id']} assigned to you: {title}"


def test_no_line_of_a_long_digest_is_over_998_characters(mail_to_sink, alice, bob, clock):
    issues = assign(alice, bob, *"O" * 50, start=clock.now)
    for issue in issues:
        issue.title = LONG_TITLE
    db.session.commit()
    notifications.queue_digests()
    (msg,) = due_messages()
    assert max(len(line) for line in msg.as_bytes().split(b"\r\n")) <= 998
    assert mail.deliver_due() == 1
    (received,) = mail_to_sink.received
    assert received.part("plain").count(LONG_TITLE) == 50
    html = received.part("html")
    assert html.count(ESCAPED) == 50 and "<script>" not in html


def test_a_digest_with_nothing_left_to_tell_is_cancelled(mail_to_sink, alice, bob, clock):
    (issue,) = assign(alice, bob, "O", start=clock.now)
    notifications.queue_digests()
    issue.assigned_to_id = None
    db.session.commit()
    assert mail.deliver_due() == 0
    assert mail_to_sink.received == []
    assert [(email.kind, email.state) for email in outbox()] == [("digest", "cancelled")]


# retries


def two_due_emails(app, new_issue, alice, clock):
    """Two assignment emails, for bob and alice, both due now."""
    new_issue()
    new_issue(assigned_to=alice.id)
    clock.advance(app.config["ASSIGNMENT_EMAIL_DELAY"])


def postponed_errors(app, clock):
    """Each email failed once and waits EMAIL_RETRY_DELAY; returns their last errors."""
    emails = outbox()
    for email in emails:
        assert (email.state, email.attempts, email.sent_at) == ("pending", 1, None)
        assert email.due_at == clock.now + timedelta(seconds=app.config["EMAIL_RETRY_DELAY"])
    return [email.last_error for email in emails]


def assert_sent_once_each_when_retried(app, mail_to_sink, clock):
    retry = app.config["EMAIL_RETRY_DELAY"]
    assert deliver_after(clock, retry - 1) == 0
    assert deliver_after(clock, 1) == 2
    assert mail.deliver_due() == 0
    assert sorted(r.to[0] for r in mail_to_sink.received) == [
        "alice@example.com",
        "bob@example.com",
    ]
    assert {email.state for email in outbox()} == {"sent"}


def test_smtp_down_postpones_every_due_email_then_sends_each_once(
    app, mail_to_sink, new_issue, alice, clock
):
    two_due_emails(app, new_issue, alice, clock)
    mail_to_sink.stop()
    assert mail.deliver_due() == 0
    errors = postponed_errors(app, clock)
    assert len(errors) == 2 and all("Connection refused" in error for error in errors)
    mail_to_sink.start()
    assert_sent_once_each_when_retried(app, mail_to_sink, clock)


def test_smtp_refusal_is_counted_then_sent_once(app, mail_to_sink, new_issue, alice, clock):
    two_due_emails(app, new_issue, alice, clock)
    mail_to_sink.refuse = "451 4.3.0 Try again later"
    assert mail.deliver_due() == 0
    assert mail_to_sink.received == []
    assert postponed_errors(app, clock) == ["451 4.3.0 Try again later"] * 2
    mail_to_sink.refuse = None
    assert_sent_once_each_when_retried(app, mail_to_sink, clock)


def test_a_refused_message_does_not_hold_up_the_next_one(
    app, mail_to_sink, new_issue, alice, clock, monkeypatch
):
    accept = mail_to_sink.handle_DATA

    async def refuse_bob(server, session, envelope):
        if "bob@example.com" in envelope.rcpt_tos:
            return "550 5.1.1 No such mailbox"
        return await accept(server, session, envelope)

    monkeypatch.setattr(mail_to_sink, "handle_DATA", refuse_bob)
    two_due_emails(app, new_issue, alice, clock)
    assert mail.deliver_due() == 1
    assert [r.to for r in mail_to_sink.received] == [["alice@example.com"]]
    to_bob, to_alice = outbox()
    assert (to_bob.state, to_bob.attempts) == ("pending", 1)
    assert to_bob.last_error == "550 5.1.1 No such mailbox"
    assert (to_alice.state, to_alice.attempts) == ("sent", 0)


def retry_delays(email, fail_at):
    """Fail the email at each of its due times until it is given up; the delays in seconds."""
    delays = []
    while email.state == "pending":
        assert len(delays) < 1000, "never given up"
        now = email.due_at
        fail_at(now)
        if email.state == "pending":
            delays.append((email.due_at - now).total_seconds())
    return delays


def assert_backoff(delays, first_retry, retry_for):
    """Doubling from `first_retry`, capped at an hour, given up `retry_for` after the first."""
    doubling = []
    while not doubling or doubling[-1] < MAX_RETRY_DELAY_SECONDS:
        doubling.append(min(first_retry * 2 ** len(doubling), MAX_RETRY_DELAY_SECONDS))
    assert delays[: len(doubling)] == doubling
    assert set(delays[len(doubling) :]) == {MAX_RETRY_DELAY_SECONDS}
    assert sum(delays[:-1]) < retry_for <= sum(delays)


def test_mark_failed_attempt_backs_off_then_gives_up():
    email = Email(state="pending", attempts=0, due_at=datetime(2030, 1, 1, tzinfo=UTC))
    delays = retry_delays(email, lambda now: email.mark_failed_attempt("421 busy", now, 30, 86400))
    assert_backoff(delays, 30, 86400)
    assert (email.state, email.last_error) == ("failed", "421 busy")
    assert email.attempts == len(delays) + 1


def test_mark_failed_attempt_keeps_the_error_short_and_gives_up_at_once_without_retry_time():
    email = Email(state="pending", attempts=0)
    email.mark_failed_attempt("x" * 10_000, datetime(2030, 1, 1, tzinfo=UTC), 30, 0)
    assert (email.state, email.attempts, len(email.last_error)) == ("failed", 1, 500)


def test_an_email_failing_for_email_retry_for_is_failed_and_never_sent(
    app, mail_to_sink, new_issue, clock
):
    new_issue()
    clock.advance(app.config["ASSIGNMENT_EMAIL_DELAY"])
    mail_to_sink.stop()
    (email,) = outbox()

    def fail_at(now):
        clock.now = now
        mail.deliver_due()
        db.session.refresh(email)

    delays = retry_delays(email, fail_at)
    assert_backoff(delays, app.config["EMAIL_RETRY_DELAY"], app.config["EMAIL_RETRY_FOR"])
    assert email.attempts == len(delays) + 1
    mail_to_sink.start()
    assert deliver_after(clock, 2 * app.config["EMAIL_RETRY_FOR"]) == 0
    assert mail_to_sink.received == []
    assert outbox()[0].state == "failed"
