"""An issue's history: what each change records (one function per kind of change), written by
`write` into the change's own transaction, before its one commit; and the history's listing.

An event's own fields (`from`, `to`, `label`, `comment`) are kept in its `details`; an
assignment keeps user ids, shown as users when the history is read.
"""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint
from flask import Response
from pydantic import TypeAdapter

from sit.clock import utcnow
from sit.extensions import db, token_auth
from sit.models import ISSUE_EXISTS, Comment, Event, Issue, Label, User, get_or_404
from sit.pagination import Order, paginate
from sit.schemas import EventOut, PageHeaders, PageQuery
from sit.users import public_columns, public_user, public_users

bp = APIBlueprint("events", __name__, tag="History")

Pending = dict[str, Any]  # an event not written yet: its kind (`event`) and its own fields
OLDEST_FIRST = Order("id", (Event.id,), descending=False)
LISTED = (Event.id, Event.event, Event.details, Event.created_at, *public_columns("actor"))
EVENT_PAGE = TypeAdapter(list[EventOut])
EVENTS: sa.Table = Event.__table__  # type: ignore[assignment]


def created() -> list[Pending]:
    return [{"event": "created"}]


def by_name(labels: set[Label]) -> list[Label]:
    return sorted(labels, key=lambda label: label.folded)


def changed(issue: Issue, fields: dict[str, Any]) -> list[Pending]:
    """What setting `fields` (as `Issue.change` takes them) changes of the issue, as events,
    read before the change: nothing for a field set to the value it has."""
    happened: list[Pending] = []
    if fields.get("title", issue.title) != issue.title:
        happened.append({"event": "renamed", "from": issue.title, "to": fields["title"]})
    if fields.get("description", issue.description) != issue.description:
        happened.append({"event": "edited"})
    if fields.get("assigned_to", issue.assigned_to_id) != issue.assigned_to_id:
        happened.append(
            {"event": "assigned", "from": issue.assigned_to_id, "to": fields["assigned_to"]}
        )
    if fields.get("status", issue.status) != issue.status:
        happened.append({"event": "closed" if fields["status"] == "C" else "reopened"})
    if "labels" in fields:
        before, after = set(issue.labels), set(fields["labels"])
        happened += [{"event": "labeled", "label": label.name} for label in by_name(after - before)]
        happened += [
            {"event": "unlabeled", "label": label.name} for label in by_name(before - after)
        ]
    return happened


def commented(comment: Comment) -> list[Pending]:
    return [{"event": "commented", "comment": comment.id}]


def comment_deleted(comment: Comment) -> list[Pending]:
    return [{"event": "comment_deleted", "comment": comment.id}]


def write(issue_id: int, happened: list[Pending]) -> None:
    """Add the events, done by the caller, to the session's transaction, all in one INSERT
    (none: no statement)."""
    if not happened:
        return
    now, actor_id = utcnow(), token_auth.current_user.id
    rows = [
        {"issue_id": issue_id, "actor_id": actor_id, "created_at": now}
        | {"event": event["event"], "details": {k: v for k, v in event.items() if k != "event"}}
        for event in happened
    ]
    db.session.connection().execute(EVENTS.insert(), rows)  # Core: no ORM bulk insert on top


def page_json(rows: list[sa.Row[Any]]) -> bytes:
    """A page of events as JSON, each with its kind's own fields only, an assignment's users
    read in one query for the page."""
    assigned = [row.details for row in rows if row.event == "assigned"]
    users = public_users({pk for details in assigned for pk in details.values() if pk})
    items = []
    for row in rows:
        details = row.details
        if row.event == "assigned":
            details = {role: users.get(pk) for role, pk in details.items()}
        items.append({**details, **row._mapping, "actor": public_user(row, "actor")})
    page = EVENT_PAGE.validate_python(items)
    return EVENT_PAGE.dump_json(page, by_alias=True, exclude_unset=True) + b"\n"


@bp.get("/api/<int:pk>/events/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[EventOut], headers=PageHeaders)
def list_events(pk: int, query_data: PageQuery) -> Any:
    """List what happened to an issue, oldest first."""
    get_or_404(Issue, pk, ISSUE_EXISTS)
    listed = sa.select(*LISTED).join(User, User.id == Event.actor_id).where(Event.issue_id == pk)
    rows, headers = paginate(listed, query_data, OLDEST_FIRST)
    return Response(page_json(rows), 200, headers, mimetype="application/json")
