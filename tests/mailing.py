"""Helpers of the mail tests: moving the clock to when emails are due, issues assigned in bulk,
and what a failed attempt leaves on the emails."""

from datetime import timedelta

from helpers import outbox

from sit.extensions import db
from sit.mail.outbox import deliver_due
from sit.models import Issue


def deliver_after(clock, seconds):
    clock.advance(seconds)
    return deliver_due()


def deliver_when_due(app, clock):
    """Move the clock to when assignment emails queued now are due, and send what is due."""
    return deliver_after(clock, app.config["ASSIGNMENT_EMAIL_DELAY"])


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
