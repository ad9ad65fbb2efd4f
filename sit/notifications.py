"""What emails a change causes. The rule of what supersedes a pending email lives here, once:
the issue's change (`save_issue`, `delete_issue`) or its recipient's (`wanted`, read when the
email is due)."""

from datetime import timedelta
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app

from sit import clock, scheduler
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
    unassigned before it was due. Returns the cancelled emails' ids."""
    pending = (Email.issue_id == issue.id) & (Email.kind == "assignment")
    ids = list(db.session.scalars(sa.select(Email.id).where(pending, Email.state == "pending")))
    if ids:
        db.session.execute(sa.update(Email).where(Email.id.in_(ids)).values(state="cancelled"))
    return ids


# An email queued with a change: one Core `INSERT … RETURNING id` (a create costs a tenth less
# than with the ORM's flush of an `Email`: `bench/RESULTS.md`, create req/s).
QUEUE = sa.insert(Email).returning(Email.id)


def queue_assignment_email(issue: Issue, assignee: sa.Row[Any]) -> None:
    """Queue the email telling `assignee` (id, email) that the issue is now theirs, due
    `ASSIGNMENT_EMAIL_DELAY` from now, with its job, in the change's transaction."""
    due_at = clock.utcnow() + timedelta(seconds=current_app.config["ASSIGNMENT_EMAIL_DELAY"])
    row = {
        "kind": "assignment",
        "recipient_id": assignee.id,
        "to_address": assignee.email,
        "issue_id": issue.id,
        "subject": assignment_subject(issue),
        "message_id": new_message_id(),
        "due_at": due_at,
    }
    email_id = db.session.connection().execute(QUEUE, row).scalar_one()
    scheduler.get().schedule_email(email_id, assignee.email, due_at)


def save_issue(
    issue: Issue, previous_assignee_id: int | None, assignee: sa.Row[Any] | None
) -> None:
    """Commit a new or changed issue with the email it causes and that email's job, in one
    transaction (one write lock per create: `bench/RESULTS.md`, create req/s).

    A new assignee (`assignee`, the id and address of the user the change names) gets an email
    `ASSIGNMENT_EMAIL_DELAY` from now, and any email still pending for the previous one is
    cancelled. Keeping the assignee schedules nothing.

    :raise StaleDataError: another request changed the issue after it was read (nothing is
        written; the caller rolls back).
    """
    new = issue.id is None
    db.session.flush()  # first the issue: its version check; a new one gets the id its email names
    if not new and issue.assigned_to_id != previous_assignee_id:
        scheduler.get().unschedule_emails(supersede_assignment_email(issue))
    if assignee is not None and assignee.id != previous_assignee_id:
        queue_assignment_email(issue, assignee)
    db.session.commit()


def delete_issue(issue: Issue) -> None:
    """Delete an issue; its pending assignment email is never sent."""
    scheduler.get().unschedule_emails(supersede_assignment_email(issue))
    db.session.delete(issue)
    db.session.commit()


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
