"""What emails a change causes. The rule of what supersedes a pending email lives here, once:
the issue's change (`save_issue`, `delete_issue`) or its recipient's (`wanted`, read when the
email is due)."""

from datetime import timedelta
from email.utils import make_msgid
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app

from sit import clock, events, scheduler
from sit.extensions import db
from sit.mail.messages import assignment_subject, digest_subject
from sit.models import NOTIFY, Email, Issue, User

DIGEST_BATCH = 1000


def new_message_id() -> str:
    """A Message-ID of SIT's own, kept with the email so that every retry carries the same one."""
    return make_msgid("sit", domain=urlsplit(current_app.config["PUBLIC_URL"]).hostname)


def wants(kind: str) -> sa.ColumnElement[bool]:
    """Whether the user (`User` in the query) wants emails of this kind now: active, and that
    kind (a key of `NOTIFY`) not turned off."""
    return User.active & getattr(User, NOTIFY[kind])


def wanted() -> sa.ColumnElement[bool]:
    """Whether each email's recipient (`Email` and its `User` in the query) still wants it: a
    pending email they no longer want is superseded, never sent."""
    return sa.or_(*((Email.kind == kind) & wants(kind) for kind in NOTIFY))


def supersede_assignment_email(issue: Issue) -> list[int]:
    """Cancel the issue's pending assignment email: the issue was deleted, reassigned or
    unassigned before it was due. Returns the cancelled emails' ids (none for a new issue)."""
    if issue.id is None:
        return []
    pending = (Email.issue_id == issue.id) & (Email.kind == "assignment")
    ids = list(db.session.scalars(sa.select(Email.id).where(pending, Email.state == "pending")))
    if ids:
        db.session.execute(sa.update(Email).where(Email.id.in_(ids)).values(state="cancelled"))
    return ids


def assignment_email(issue: Issue, assignee: User) -> Email:
    delay = timedelta(seconds=current_app.config["ASSIGNMENT_EMAIL_DELAY"])
    return Email(
        kind="assignment",
        recipient=assignee,
        to_address=assignee.email,
        issue=issue,
        subject=assignment_subject(issue),
        message_id=new_message_id(),
        due_at=clock.utcnow() + delay,
    )


def save_issue(
    issue: Issue,
    previous_assignee_id: int | None,
    assignee: User | None,
    happened: list[events.Pending],
) -> None:
    """Commit a new or changed issue with the events it records (`sit.events`) and the email it
    causes, then schedule that email.

    A new assignee (`assignee`, the user the change names, already loaded) gets an email
    `ASSIGNMENT_EMAIL_DELAY` from now, and any email still pending for the previous one is
    cancelled. Keeping the assignee schedules nothing.
    """
    email, cancelled = None, []
    if issue.assigned_to_id != previous_assignee_id:
        cancelled = supersede_assignment_email(issue)
    db.session.flush()  # a new issue gets its id and issue_id, which its events and email name
    events.write(issue.id, happened)
    if assignee is not None and assignee.id != previous_assignee_id:
        email = assignment_email(issue, assignee)
        db.session.add(email)
    db.session.commit()
    scheduler.get().unschedule_emails(cancelled)
    if email is not None:
        scheduler.get().schedule_email(email)


def delete_issue(issue: Issue) -> None:
    """Delete an issue; its pending assignment email is never sent."""
    cancelled = supersede_assignment_email(issue)
    db.session.delete(issue)
    db.session.commit()
    scheduler.get().unschedule_emails(cancelled)


def digest_recipients() -> sa.Result[tuple[int, str, int]]:
    """(user id, address, number of issues) for each user with assigned issues who wants a
    digest, streamed."""
    count = sa.func.count(Issue.id)
    query = (
        sa.select(User.id, User.email, count)
        .join(Issue, Issue.assigned_to_id == User.id)
        .where(wants("digest"))
        .group_by(User.id, User.email)
        .order_by(User.id)
    )
    return db.session.execute(query.execution_options(yield_per=DIGEST_BATCH))


def queue_digests() -> int:
    """Queue this run's digests, due now, and commit: one per user with assigned issues who
    wants a digest (the pass checks again when sending).

    A new run supersedes digests still pending from an earlier one (they would be stale).
    """
    now = clock.utcnow()
    stale = (Email.kind == "digest") & (Email.state == "pending")
    db.session.execute(sa.update(Email).where(stale).values(state="cancelled"))
    queued = 0
    for batch in digest_recipients().partitions(DIGEST_BATCH):
        rows = [
            {
                "kind": "digest",
                "state": "pending",
                "recipient_id": user_id,
                "to_address": address,
                "subject": digest_subject(count),
                "message_id": new_message_id(),
                "due_at": now,
                "created_at": now,
                "attempts": 0,
            }
            for user_id, address, count in batch
        ]
        db.session.execute(sa.insert(Email), rows)
        queued += len(rows)
    db.session.commit()
    return queued
