"""What emails a change causes. The rules of what supersedes a pending email live here, once:
the issue's change (`save_issue`, `delete_issue`) or its recipient's (`wanted`, read when the
email is due); and of what a comment email tells: which comments join it (`comment_posted`),
which it still tells when it is sent (`email_comments`), and where the comments that joined it
while it was being sent go (`follow_up`)."""

from collections import defaultdict
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app

from sit import clock, events, scheduler, watching
from sit.extensions import db
from sit.mail.messages import NAME, assignment_subject, comment_subject, digest_subject
from sit.models import NOTIFY, Comment, Email, Issue, User, get_or_404, outbox_comments
from sit.webhooks.messages import issue_news

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
    pending email they no longer want is superseded, never sent. A comment email, only while
    they do not ignore its issue either."""
    ignoring = watching.ignores(Email.issue_id, Email.recipient_id)
    still = {"comment": ~ignoring}
    return sa.or_(
        *((Email.kind == kind) & wants(kind) & still.get(kind, sa.true()) for kind in NOTIFY)
    )


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
    issue: Issue,
    previous_assignee_id: int | None,
    assignee: sa.Row[Any] | None,
    happened: list[events.Pending],
) -> None:
    """Commit a new or changed issue with the events it records (`sit.events`), the email it
    causes with that email's job, and the webhook messages it causes, in one transaction (one
    write lock per create: `bench/RESULTS.md`, create req/s).

    A new assignee (`assignee`, the id and address of the user the change names) gets an email
    `ASSIGNMENT_EMAIL_DELAY` from now, and any email still pending for the previous one is
    cancelled. Keeping the assignee schedules nothing.

    :raise StaleDataError: another request changed the issue after it was read (nothing is
        written; the caller rolls back).
    """
    news = issue_news(issue)  # before anything flushes the change
    new = issue.id is None
    db.session.flush()  # first the issue: its version check; a new one gets the id its email names
    events.write(issue.id, happened)
    if not new and issue.assigned_to_id != previous_assignee_id:
        scheduler.get().unschedule_emails(supersede_assignment_email(issue))
    if assignee is not None and assignee.id != previous_assignee_id:
        queue_assignment_email(issue, assignee)
    news.queue()
    db.session.commit()


def delete_issue(issue: Issue) -> None:
    """Delete an issue, telling webhooks; its pending assignment email is never sent."""
    scheduler.get().unschedule_emails(supersede_assignment_email(issue))
    issue_news(issue, deleted=True).queue()
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


def comment_due() -> datetime:
    """When a comment email started now is due."""
    return clock.utcnow() + timedelta(seconds=current_app.config["COMMENT_EMAIL_DELAY"])


def pending_comment_emails(issue_id: int) -> sa.ColumnElement[bool]:
    return (Email.issue_id == issue_id) & (Email.kind == "comment") & (Email.state == "pending")


def comment_posted(comment: Comment) -> None:
    """Queue or join the comment emails this comment causes, in its transaction (before its
    one commit): each watcher of its issue but its author gets it in their comment email about
    the issue still pending, else in a new one due `COMMENT_EMAIL_DELAY` from now (if they
    want comment emails now: the outbox checks again when it is due).

    The issue's row is locked first, as the outbox locks it to settle a comment email: a
    comment and the settling of an email it could join take turns. So a comment joins an email
    that is still pending, whose settling then sends it or hands it to a follow-up email
    (`follow_up`), or else starts a new one: never an email that is already settled.
    """
    issue = get_or_404(Issue, comment.issue_id, lock=True)
    recipients = watching.watchers(issue) - {comment.author_id}
    if not recipients:
        return
    db.session.flush()  # the comment's id
    mine = pending_comment_emails(issue.id) & Email.recipient_id.in_(recipients)
    query = sa.select(Email.recipient_id, Email.id).where(mine).with_for_update()
    emails = dict(db.session.execute(query).all())
    unqueued = User.id.in_(recipients - emails.keys())
    addresses = sa.select(User.id, User.email).where(unqueued, wants("comment"))
    new = [
        Email(
            kind="comment",
            recipient_id=user_id,
            to_address=address,
            issue_id=issue.id,
            subject=comment_subject(issue),
            message_id=new_message_id(),
            due_at=comment_due(),
        )
        for user_id, address in db.session.execute(addresses)
    ]
    db.session.add_all(new)
    db.session.flush()
    told = [{"email_id": email_id, "comment_id": comment.id} for email_id in emails.values()]
    told += [{"email_id": email.id, "comment_id": comment.id} for email in new]
    if told:  # none when no watcher wants comment emails now
        db.session.execute(sa.insert(outbox_comments), told)


Comments = dict[int, list[sa.Row[Any]]]


def email_comments(email_ids: list[int], connection: sa.Connection) -> Comments:
    """What each of these comment emails tells now: its comments still there (a deleted comment
    has left every email), in their latest text, in order, with their authors' names; one
    query for a batch. An email with none left is cancelled (`sit.mail.messages.build`)."""
    if not email_ids:
        return {}
    told = outbox_comments.c
    fields = (told.email_id, Comment.id, Comment.body, Comment.created_at, *NAME)
    query = (
        sa.select(*fields)
        .join(Comment, Comment.id == told.comment_id)
        .join(User, User.id == Comment.author_id)
        .where(told.email_id.in_(email_ids))
        .order_by(told.email_id, Comment.created_at, Comment.id)
    )
    comments: Comments = defaultdict(list)
    for comment in connection.execute(query):
        comments[comment.email_id].append(comment)
    return comments


def lock_issue(issue_id: int | None, connection: sa.Connection) -> None:
    """Take the issue's row lock on PostgreSQL, as `comment_posted` does (SQLite: the write lock,
    which the transaction's first write takes, serializes every writer anyway)."""
    if connection.dialect.name == "postgresql" and issue_id is not None:
        connection.execute(sa.select(Issue.id).where(Issue.id == issue_id).with_for_update())


def follow_up(email_id: int, told: list[int], connection: sa.Connection) -> None:
    """Hand the comments that joined a comment email after it was read (`told`: those it was
    built with) to a new email, due `COMMENT_EMAIL_DELAY` from now (they were made while the
    email was being sent): in the transaction that settles the email, under its issue's lock
    (`lock_issue`)."""
    joined = outbox_comments.c
    mine = (joined.email_id == email_id) & joined.comment_id.not_in(told)
    if connection.scalar(sa.select(joined.comment_id).where(mine).limit(1)) is None:
        return
    copied = (Email.kind, Email.recipient_id, Email.to_address, Email.issue_id, Email.subject)
    email = connection.execute(sa.select(*copied).where(Email.id == email_id)).one()
    values = {"state": "pending", "message_id": new_message_id(), "due_at": comment_due()}
    values |= {"created_at": clock.utcnow(), "attempts": 0}
    insert = sa.insert(Email).values(**email._mapping, **values).returning(Email.id)
    new_id = connection.execute(insert).scalar_one()
    connection.execute(sa.update(outbox_comments).where(mine).values(email_id=new_id))
