"""What each email says and how it is written, received by a real SMTP sink: content, escaping,
digests, long lines, the MIME Flask-Mail would write, and the Date of SIT's clock."""

import re
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime

import flask_mail
from helpers import outbox
from mailing import assign, deliver_when_due

from sit import jobs, notifications
from sit.extensions import db
from sit.mail import messages
from sit.mail.outbox import batch_facts, deliver_due, due_rows
from sit.unsubscribe import unsubscribe_url

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
        assert f"http://sit.test/issues/{issue['id']}" in text, subtype  # its page


def test_user_text_is_escaped_in_html_and_verbatim_in_text(app, mail_to_sink, new_issue, clock):
    new_issue(title=HOSTILE, description=f"{HOSTILE}\nsecond line")
    deliver_when_due(app, clock)
    (received,) = mail_to_sink.received
    html, text = received.part("html"), received.part("plain")
    assert html.count(ESCAPED) == 2 and "<script>" not in html
    assert text.count(HOSTILE) == 2 and "&lt;" not in text
    assert received.subject.endswith(HOSTILE)


def test_a_long_single_line_description_arrives_whole(app, mail_to_sink, new_issue, clock):
    description = "".join(f"word{n} " for n in range(1000))[:5000]
    assert "\n" not in description and len(description) == 5000
    new_issue(description=description)
    assert deliver_when_due(app, clock) == 1
    (received,) = mail_to_sink.received
    assert description in received.part("plain")
    assert description in received.part("html")


def test_the_date_is_sit_clocks(app, mail_to_sink, new_issue, clock):
    new_issue()
    assert deliver_when_due(app, clock) == 1
    (received,) = mail_to_sink.received
    assert parsedate_to_datetime(received.message["Date"]) == clock.now


def kind_of(subject):
    return "digest" if subject.startswith("Your SIT digest") else "assignment"


def test_every_email_carries_its_one_click_unsubscribe_link(
    app, mail_to_sink, new_issue, bob, clock
):
    new_issue()
    notifications.queue_digests()
    clock.advance(app.config["ASSIGNMENT_EMAIL_DELAY"])
    urls = {kind: unsubscribe_url(bob.id, kind) for kind in ("assignment", "digest")}
    for msg in due_messages():
        kind = kind_of(msg.subject)
        msg.date = clock.now.timestamp()
        line = f"List-Unsubscribe: <{urls[kind]}>\r\n".encode()
        assert len(line) > 78 and line in msg.as_bytes()  # as written: one line, not refolded
    assert deliver_due() == 2
    for received in mail_to_sink.received:
        kind = kind_of(received.subject)
        assert received.message["List-Unsubscribe"] == f"<{urls[kind]}>"
        assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"Stop these emails: {urls[kind]}" in received.part("plain")
        assert f'<a href="{urls[kind]}">' in received.part("html")


# digests


def link(issue):
    return f"http://sit.test/issues/{issue.id}"


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


def test_no_digest_for_a_user_without_issues(mail_to_sink, alice, bob, clock):
    assign(alice, bob, "O", start=clock.now)
    assert jobs.send_digest() == (1, 1)
    assert [r.to for r in mail_to_sink.received] == [["bob@example.com"]]


def due_messages():
    """The messages of the emails due now, as a pass builds them."""
    with db.engine.connect() as connection:
        rows = due_rows(connection)
        facts = batch_facts(rows, connection)
        return [messages.build(row, facts, connection) for row in rows]


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


def as_flask_mail_writes_it(msg):
    """`mime_parts` of the message as Flask-Mail writes it, but for a URL header, which
    Flask-Mail folds into encoded words and SIT keeps on one line (`messages.URL_HEADERS`): its
    value decoded."""
    (headers, *rest), *parts = mime_parts(flask_mail.Message.as_bytes(msg))
    headers = [
        (name, str(make_header(decode_header(value))) if name in messages.URL_HEADERS else value)
        for name, value in headers
    ]
    return [(headers, *rest), *parts]


def test_messages_are_written_as_flask_mail_writes_them(app, alice, bob, new_issue, clock):
    new_issue(title=LONG_TITLE, description=TRICKY)
    assign(alice, bob, "O", "C", start=clock.now)
    notifications.queue_digests()
    clock.advance(app.config["ASSIGNMENT_EMAIL_DELAY"])
    messages = due_messages()
    assert sorted(msg.subject[:4] for msg in messages) == ["Issu", "Your"]
    for msg in messages:
        msg.date = clock.now.timestamp()
        ours = msg.as_bytes()
        assert mime_parts(ours) == as_flask_mail_writes_it(msg)
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
    assert deliver_due() == 1
    (received,) = mail_to_sink.received
    for subtype in ("plain", "html"):
        expected = flask_mails.get_body(preferencelist=(subtype,)).get_content()
        assert received.part(subtype) == expected, subtype
    lines = TRICKY.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    assert "\r\n".join(lines) in received.part("plain")  # each line break arrives as CRLF
    title = messages.one_line(LONG_TITLE)
    assert received.subject == f"Issue #{issue['issue_id']} assigned to you: {title}"


def test_no_line_of_a_long_digest_is_over_998_characters(mail_to_sink, alice, bob, clock):
    issues = assign(alice, bob, *"O" * 50, start=clock.now)
    for issue in issues:
        issue.title = LONG_TITLE
    db.session.commit()
    notifications.queue_digests()
    (msg,) = due_messages()
    assert max(len(line) for line in msg.as_bytes().split(b"\r\n")) <= 998
    assert deliver_due() == 1
    (received,) = mail_to_sink.received
    assert received.part("plain").count(LONG_TITLE) == 50
    html = received.part("html")
    assert html.count(ESCAPED) == 50 and "<script>" not in html
