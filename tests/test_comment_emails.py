"""Comment emails: who gets one, which comments join it, what it tells when it is sent, and the
comment that arrives while it is being sent; threading and the per-issue unsubscribe link.
Time moves through SIT's clock; comments are made as the comment API makes them
(`comment_posted` in the comment's transaction)."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from helpers import comment_on as post
from helpers import outbox, wait_until, waiting_on
from mailing import deliver_after

from sit import notifications
from sit.cli import create_user
from sit.extensions import db
from sit.mail import transport
from sit.mail.outbox import deliver_due
from sit.models import Comment, Issue, Subscription, User
from sit.watching import choose

DELAY = 60  # COMMENT_EMAIL_DELAY's default, seconds


def told(received):
    """The comment bodies an email tells, in order (each body is one line `said: ...`)."""
    return [line for line in received.part("plain").splitlines() if line.startswith("said: ")]


def pending(kind="comment"):
    return {(e.recipient_id, e.issue_id) for e in outbox(kind=kind, state="pending")}


@pytest.fixture
def dave(app):
    return create_user("dave", "dave@example.com", "pw", "Dave")


@pytest.fixture
def issue(new_issue):
    """alice's issue, assigned to bob: both watch it."""
    return new_issue()["id"]


def test_each_watcher_but_the_author_gets_one_email_due_the_delay_after(
    app, issue, alice, bob, carol, dave, clock
):
    choose(issue, carol.id, ignored=False)  # subscribed; dave has no reason to watch
    post(issue, alice, "said: which printer?")
    emails = outbox(kind="comment")
    assert {email.recipient_id for email in emails} == {bob.id, carol.id}
    assert {email.due_at for email in emails} == {clock.now + timedelta(seconds=DELAY)}
    assert {email.state for email in emails} == {"pending"}


def test_comments_inside_the_window_join_the_pending_email_in_order(
    app, mail_to_sink, issue, alice, bob, carol, clock
):
    choose(issue, carol.id, ignored=False)
    post(issue, alice, "said: one")
    clock.advance(20)
    post(issue, carol, "said: two")  # her own is not sent to her
    clock.advance(20)
    post(issue, alice, "said: three")
    assert deliver_after(clock, DELAY - 41) == 0  # one second early
    assert deliver_after(clock, 1) == 2  # bob's and carol's, due a minute after "one"
    [to_bob] = mail_to_sink.to(bob.email)
    assert told(to_bob) == ["said: one", "said: two", "said: three"]
    [to_carol] = mail_to_sink.to(carol.email)
    assert told(to_carol) == ["said: one", "said: three"]
    assert deliver_after(clock, 20) == 1  # alice's, a minute after "two"
    [to_alice] = mail_to_sink.to(alice.email)
    assert told(to_alice) == ["said: two"]
    assert len(outbox(kind="comment", state="sent")) == 3


def test_a_comment_after_the_email_was_sent_starts_a_new_one(
    app, mail_to_sink, issue, alice, bob, clock
):
    post(issue, alice, "said: first")
    deliver_after(clock, DELAY)
    post(issue, alice, "said: second")
    assert deliver_after(clock, DELAY) == 1
    assert [told(r) for r in mail_to_sink.to(bob.email)] == [["said: first"], ["said: second"]]


def test_a_deleted_comment_is_left_out_and_an_edit_shows_its_latest_text(
    app, mail_to_sink, issue, alice, bob, clock
):
    kept = post(issue, alice, "said: typo")
    gone = post(issue, alice, "said: oops")
    kept.body = "said: fixed"
    db.session.delete(gone)
    db.session.commit()
    assert deliver_after(clock, DELAY) == 1
    assert told(mail_to_sink.received[0]) == ["said: fixed"]


def test_an_email_whose_comments_are_all_deleted_is_cancelled(
    app, mail_to_sink, issue, alice, clock
):
    db.session.delete(post(issue, alice, "said: never mind"))
    db.session.commit()
    assert deliver_after(clock, DELAY) == 0
    assert [email.state for email in outbox(kind="comment")] == ["cancelled"]
    assert mail_to_sink.received == []


def test_a_deleted_issue_cancels_its_comment_emails(
    app, mail_to_sink, client, as_alice, issue, alice, clock
):
    post(issue, alice, "said: closing this")
    assert client.delete(f"/api/{issue}/", headers=as_alice).status_code == 204
    assert deliver_after(clock, DELAY) == 0
    assert [email.state for email in outbox(kind="comment")] == ["cancelled"]


@pytest.mark.parametrize(
    "change",
    [
        lambda bob, issue: bob.change({"notify_comments": False}),
        lambda bob, issue: bob.change({"active": False}),
        lambda bob, issue: choose(issue, bob.id, ignored=True),
    ],
    ids=["turned-off", "deactivated", "ignored"],
)
def test_a_recipient_who_no_longer_wants_it_when_due_gets_nothing(
    app, mail_to_sink, issue, alice, bob, clock, change
):
    post(issue, alice, "said: hello")
    change(bob, issue)
    db.session.commit()
    assert deliver_after(clock, DELAY) == 0
    assert [email.state for email in outbox(kind="comment")] == ["cancelled"]


def test_it_goes_to_the_address_its_recipient_has_when_it_is_sent(
    app, mail_to_sink, issue, alice, bob, clock
):
    post(issue, alice, "said: hello")
    bob.change({"email": "bob@new.example"})
    db.session.commit()
    assert deliver_after(clock, DELAY) == 1
    assert mail_to_sink.received[0].to == ["bob@new.example"]


def test_an_ignoring_watcher_gets_no_email_and_a_subscriber_does(
    app, issue, alice, bob, carol, dave, clock
):
    choose(issue, bob.id, ignored=True)  # the assignee, ignoring it
    choose(issue, carol.id, ignored=False)
    choose(issue, dave.id, ignored=False)
    dave.change({"notify_comments": False})  # none is queued for him either
    post(issue, alice, "said: anyone?")
    assert pending() == {(carol.id, issue)}


def test_a_comment_no_watcher_wants_an_email_for_queues_none(app, issue, alice, bob):
    bob.change({"notify_comments": False})
    post(issue, alice, "said: quiet")
    assert outbox(kind="comment") == []


def test_a_comment_made_while_its_email_is_being_sent_goes_in_a_follow_up(
    app, mail_to_sink, issue, alice, bob, clock, monkeypatch
):
    """The email was read with "one"; "two" joins it while the server takes it: the settling
    finds "two" among its comments and hands it to a new email, due a minute after "two"."""
    post(issue, alice, "said: one")
    clock.advance(DELAY)
    send = transport.Outgoing.send
    late = []

    def send_while_commenting(self, msg, following):
        if not late:
            clock.advance(1)
            late.append(post(issue, alice, "said: two"))
        send(self, msg, following)

    monkeypatch.setattr(transport.Outgoing, "send", send_while_commenting)
    assert deliver_due() == 1
    assert told(mail_to_sink.received[0]) == ["said: one"]
    [follow_up] = outbox(kind="comment", state="pending")
    assert follow_up.due_at == clock.now + timedelta(seconds=DELAY)
    assert deliver_after(clock, DELAY) == 1
    assert told(mail_to_sink.received[1]) == ["said: two"]
    assert deliver_after(clock, DELAY) == 0


def test_on_postgresql_a_comment_being_made_holds_the_settling_back_then_goes_in_a_follow_up(
    postgres_db, app, mail_to_sink, issue, alice, bob, clock
):
    """The email is read with "one" and sent while "two" is being made (its transaction holds the
    issue and the email, `FOR UPDATE`): the settling waits for it, then finds "two" and hands
    it on. Were it not held back, it would mark the email sent before "two" joined it, and
    "two" would be in no email."""
    post(issue, alice, "said: one")
    clock.advance(DELAY)
    late = Comment(issue_id=issue, author_id=alice.id, body="said: two")
    db.session.add(late)
    notifications.comment_posted(late)
    holder = db.session.connection()

    def deliver_elsewhere():
        with app.app_context():
            return deliver_due()

    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(deliver_elsewhere)
        wait_until(lambda: waiting_on(holder), 30, "the settling to wait for the comment")
        db.session.commit()
        assert sending.result(timeout=30) == 1
    assert told(mail_to_sink.received[0]) == ["said: one"]
    assert deliver_after(clock, DELAY) == 1
    assert told(mail_to_sink.received[1]) == ["said: two"]


def test_comment_emails_are_listed_by_flask_sit_outbox(runner, issue, alice, bob):
    post(issue, alice, "said: hi")
    result = runner.invoke(args=["sit", "outbox", "--kind", "comment"])
    assert result.exit_code == 0, result.output
    [_, row] = result.stdout.splitlines()
    assert row.split()[1:3] == ["comment", "pending"]
    assert "bob@example.com" in row and "Re: [SIT #" in row


# threading and the unsubscribe link


def test_emails_about_one_issue_are_one_conversation(app, mail_to_sink, issue, alice, bob, clock):
    post(issue, alice, "said: assigned and commented")
    clock.advance(DELAY)
    deliver_after(clock, app.config["ASSIGNMENT_EMAIL_DELAY"])
    issue_id = db.session.get(Issue, issue).issue_id
    assignment, comment = sorted(mail_to_sink.to(bob.email), key=lambda r: "Re:" in r.subject)
    thread = f"<issue.{issue_id}@sit.test>"
    for received in (assignment, comment):
        assert received.message["In-Reply-To"] == received.message["References"] == thread
        assert issue_id in received.subject
    assert assignment.subject == f"Issue #{issue_id} assigned to you: Printer on fire"
    assert comment.subject == f"Re: [SIT #{issue_id}] Printer on fire"
    ids = {r.message["Message-ID"] for r in (assignment, comment)}
    assert len(ids) == 2 and thread not in ids


def test_a_digest_belongs_to_no_issue_thread(app, mail_to_sink, issue, bob, clock):
    notifications.queue_digests()
    assert deliver_due() == 1
    assert mail_to_sink.received[0].message["In-Reply-To"] is None


def test_the_unsubscribe_link_of_a_comment_email_ignores_that_issue_for_its_recipient(
    app, client, mail_to_sink, new_issue, issue, alice, bob, clock
):
    other = new_issue()["id"]
    post(issue, alice, "said: hi")
    deliver_after(clock, DELAY)
    link = mail_to_sink.received[0].message["List-Unsubscribe"].strip("<>")
    assert "Stop emails about this issue: " + link in mail_to_sink.received[0].part("plain")
    page = client.get(link.removeprefix("http://sit.test"))
    assert "the comment emails about issue #" in page.get_data(as_text=True)
    assert client.post(link.removeprefix("http://sit.test")).status_code == 200
    db.session.expire_all()
    assert db.session.get(Subscription, (issue, bob.id)).ignored
    assert db.session.get(Subscription, (other, bob.id)) is None
    bob = db.session.get(User, bob.id)
    assert (bob.notify_comments, bob.notify_assignments) == (True, True)
    post(issue, alice, "said: still there?")
    post(other, alice, "said: and here?")
    assert pending() == {(bob.id, other)}
