"""The outbox pass against a real SMTP sink: when each email goes, once; what is never sent;
the recipient as they are when it is due; and failed attempts, postponed with back-off until
given up."""

from datetime import UTC, datetime

import pytest
from helpers import outbox
from mailing import assign, deliver_after, deliver_when_due, postponed_errors, two_due_emails

from sit import notifications
from sit.extensions import db
from sit.mail.outbox import deliver_due
from sit.models import MAX_RETRY_DELAY_SECONDS, Email


def test_an_email_is_sent_when_due_not_before_and_once(app, mail_to_sink, new_issue, clock):
    new_issue()
    assert deliver_due() == 0
    assert deliver_after(clock, app.config["ASSIGNMENT_EMAIL_DELAY"] - 1) == 0
    assert mail_to_sink.received == []
    assert deliver_after(clock, 1) == 1
    assert deliver_due() == 0
    assert len(mail_to_sink.received) == 1
    (email,) = outbox()
    assert (email.state, email.sent_at, email.attempts) == ("sent", clock.now, 0)


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


def test_a_digest_with_nothing_left_to_tell_is_cancelled(mail_to_sink, alice, bob, clock):
    (issue,) = assign(alice, bob, "O", start=clock.now)
    notifications.queue_digests()
    issue.assigned_to_id = None
    db.session.commit()
    assert deliver_due() == 0
    assert mail_to_sink.received == []
    assert [(email.kind, email.state) for email in outbox()] == [("digest", "cancelled")]


# the recipient as they are when it is due


def change_me(client, headers, **fields):
    response = client.patch("/api/users/me/", json=fields, headers=headers)
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    ("switches", "state", "recipients"),
    [([False], "cancelled", []), ([False, True], "sent", ["bob@example.com"])],
)
def test_an_assignment_email_goes_only_if_still_wanted_when_due(
    app, client, as_bob, mail_to_sink, new_issue, clock, switches, state, recipients
):
    new_issue()
    for on in switches:
        change_me(client, as_bob, notify_assignments=on)
    assert deliver_when_due(app, clock) == len(recipients)
    assert [r.to[0] for r in mail_to_sink.received] == recipients
    assert [(email.state, email.attempts) for email in outbox()] == [(state, 0)]


def test_a_deactivated_recipient_gets_nothing(app, mail_to_sink, new_issue, bob, clock):
    new_issue()
    notifications.queue_digests()
    bob.change({"active": False})
    db.session.commit()
    assert deliver_when_due(app, clock) == 0
    assert mail_to_sink.received == []
    assert [(email.kind, email.state) for email in outbox()] == [
        ("assignment", "cancelled"),
        ("digest", "cancelled"),
    ]


def test_a_queued_digest_turned_off_before_it_is_sent_is_cancelled(
    client, as_bob, mail_to_sink, alice, bob, carol, clock
):
    assign(alice, bob, "O", start=clock.now)
    assign(alice, carol, "O", start=clock.now)
    assert notifications.queue_digests() == 2
    change_me(client, as_bob, notify_digest=False)
    assert deliver_due() == 1
    assert [r.to for r in mail_to_sink.received] == [["carol@example.com"]]
    assert [(email.to_address, email.state) for email in outbox()] == [
        ("bob@example.com", "cancelled"),
        ("carol@example.com", "sent"),
    ]


def test_an_email_goes_to_the_address_its_recipient_has_when_it_is_sent(
    app, client, as_bob, mail_to_sink, new_issue, clock
):
    new_issue()
    notifications.queue_digests()
    change_me(client, as_bob, email="builder@example.org")
    assert deliver_when_due(app, clock) == 2
    assert [(r.to, r.message["To"]) for r in mail_to_sink.received] == [
        (["builder@example.org"], "builder@example.org")
    ] * 2
    assert [(email.state, email.to_address) for email in outbox()] == [
        ("sent", "builder@example.org")
    ] * 2


def test_a_failed_attempt_records_the_address_it_was_tried_with(
    app, client, as_bob, mail_to_sink, new_issue, clock
):
    new_issue()
    change_me(client, as_bob, email="builder@example.org")
    mail_to_sink.refuse = "451 4.3.0 Try again later"
    assert deliver_when_due(app, clock) == 0
    (email,) = outbox()
    assert (email.state, email.to_address, email.attempts) == ("pending", "builder@example.org", 1)


def test_an_unwanted_email_is_cancelled_not_failed_while_the_server_is_down(
    app, client, as_bob, mail_to_sink, new_issue, alice, clock
):
    new_issue(assigned_to=alice.id)
    new_issue()  # due after alice's: the server is found down first
    change_me(client, as_bob, notify_assignments=False)
    mail_to_sink.stop()
    assert deliver_when_due(app, clock) == 0
    assert deliver_due() == 0
    assert [(email.state, email.attempts) for email in outbox()] == [
        ("pending", 1),
        ("cancelled", 0),
    ]


# retries


def assert_sent_once_each_when_retried(app, mail_to_sink, clock):
    retry = app.config["EMAIL_RETRY_DELAY"]
    assert deliver_after(clock, retry - 1) == 0
    assert deliver_after(clock, 1) == 2
    assert deliver_due() == 0
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
    assert deliver_due() == 0
    errors = postponed_errors(app, clock)
    assert len(errors) == 2 and all("Connection refused" in error for error in errors)
    mail_to_sink.start()
    assert_sent_once_each_when_retried(app, mail_to_sink, clock)


def test_smtp_refusal_is_counted_then_sent_once(app, mail_to_sink, new_issue, alice, clock):
    two_due_emails(app, new_issue, alice, clock)
    mail_to_sink.refuse = "451 4.3.0 Try again later"
    assert deliver_due() == 0
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
    assert deliver_due() == 1
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
        deliver_due()
        db.session.refresh(email)

    delays = retry_delays(email, fail_at)
    assert_backoff(delays, app.config["EMAIL_RETRY_DELAY"], app.config["EMAIL_RETRY_FOR"])
    assert email.attempts == len(delays) + 1
    mail_to_sink.start()
    assert deliver_after(clock, 2 * app.config["EMAIL_RETRY_FOR"]) == 0
    assert mail_to_sink.received == []
    assert outbox()[0].state == "failed"
