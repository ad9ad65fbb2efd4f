"""What a webhook message says and how it is signed (Standard Webhooks v1), and storing it in
the transaction of the change it tells of: the change's commit is the message's."""

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import sqlalchemy as sa

from sit import clock
from sit.extensions import db
from sit.models import Comment, Issue, User, Webhook, WebhookMessage
from sit.schemas import CommentOut, IssueOut, UserOut, WebhookType, utc_text

# The types of message, as the API names them (`WebhookType`, where "*" stands for them all).
TYPES = tuple(kind for kind in get_args(WebhookType) if kind != "*")
PING = "ping"
SECRET_PREFIX = "whsec_"
# Each writable field of an issue, as the API names it, and its attribute.
ISSUE_FIELDS = {"title": "title", "description": "description", "status": "status"}
ISSUE_FIELDS["assigned_to"] = "assigned_to_id"
ACTIVE = sa.select(Webhook.id, Webhook.events).where(Webhook.active)


def new_secret() -> str:
    """A secret in the Standard Webhooks form: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_msg_id() -> str:
    """A `webhook-id`: one per message, the same on every attempt to deliver it."""
    return f"msg_{secrets.token_urlsafe(18)}"


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the secret's key."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, msg_id: str, body: str) -> dict[str, str]:
    """The headers of one attempt, signed at the time of the attempt."""
    timestamp = int(clock.utcnow().timestamp())
    return {
        "Content-Type": "application/json",
        "User-Agent": "SIT-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def body(kind: str, data: dict[str, Any]) -> str:
    now = utc_text(clock.utcnow())
    return json.dumps({"type": kind, "timestamp": now, "data": data}, ensure_ascii=False)


def store(webhook_ids: list[int], kind: str, text: str) -> list[dict[str, Any]]:
    """Add a message to each webhook to the session's transaction; returns the rows."""
    now = clock.utcnow()
    rows = [
        {"webhook_id": pk, "msg_id": new_msg_id(), "type": kind, "body": text}
        | {"state": "pending", "attempts": 0, "due_at": now, "created_at": now}
        for pk in webhook_ids
    ]
    db.session.execute(sa.insert(WebhookMessage), rows)
    return rows


def queue(kind: str, data: Callable[[], dict[str, Any]]) -> None:
    """Store a message of this type for each active webhook that wants it, in the session's
    transaction (the caller commits). `data` is called only when one does: a change that no
    webhook wants costs one query of a small table."""
    active = db.session.connection().execute(ACTIVE)  # Core: a third of the session's cost
    wanting = [pk for pk, events in active if "*" in events or kind in events]
    if wanting:
        store(wanting, kind, body(kind, data()))


def user_data(user: User) -> dict[str, Any]:
    return UserOut.model_validate(user).model_dump(mode="json")


@dataclass
class IssueNews:
    """What a write to an issue will tell webhooks: read before anything flushes the write
    (the session's history of each field is gone after a flush)."""

    issue: Issue
    kind: str
    changes: dict[str, Any] = field(default_factory=dict)

    def queue(self) -> None:
        """Store the messages (after the flush that gives the issue its id and times)."""
        if self.kind == "issue.updated" and not self.changes:
            return  # a write that changes nothing tells nothing
        queue(self.kind, self.data)

    def data(self) -> dict[str, Any]:
        data = IssueOut.model_validate(self.issue).model_dump(mode="json")
        data["actor"] = user_data(self.issue.creator)  # only the creator changes an issue
        if self.kind == "issue.updated":
            data["changes"] = self.changes
        return data


def issue_news(issue: Issue, deleted: bool = False) -> IssueNews:
    """The message a write to this issue makes: created, updated (each changed field's
    previous value in `changes`) or deleted."""
    state = sa.inspect(issue)
    if deleted:
        return IssueNews(issue, "issue.deleted")
    if state.pending or state.transient:
        return IssueNews(issue, "issue.created")
    changes = {}
    for name, attribute in ISSUE_FIELDS.items():
        previous = state.attrs[attribute].history.deleted
        if previous:
            changes[name] = {"from": previous[0]}
    labels = state.attrs.labels.history
    if labels.added or labels.deleted:
        previous = [label.name for label in (*labels.unchanged, *labels.deleted)]
        changes["labels"] = {"from": sorted(previous, key=str.casefold)}
    return IssueNews(issue, "issue.updated", changes)


def queue_comment(kind: str, comment: Comment, actor_id: int) -> None:
    """Store the message of a comment created, updated or deleted by the user `actor_id` (an
    edit that changes nothing tells nothing)."""
    if kind == "comment.updated" and not sa.inspect(comment).attrs.body.history.deleted:
        return

    def data() -> dict[str, Any]:
        shown = CommentOut.model_validate(comment).model_dump(mode="json")
        return shown | {"actor": user_data(db.session.get_one(User, actor_id))}

    queue(kind, data)
