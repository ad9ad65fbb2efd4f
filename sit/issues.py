"""The issue API: anyone signed in reads every issue; only its creator changes or deletes it."""

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint, abort
from flask import Response, request
from pydantic import TypeAdapter
from sqlalchemy.orm.exc import StaleDataError

from sit import errors, events, labels, notifications
from sit import search as text_search
from sit.auth import Caller
from sit.extensions import db, token_auth
from sit.models import Issue, Label, User, get_or_404
from sit.pagination import Order, paginate
from sit.schemas import (
    CreatedHeaders,
    IssueHeaders,
    IssueIn,
    IssueOut,
    IssuePatch,
    IssueQuery,
    PageHeaders,
    issue_url,
)

bp = APIBlueprint("issues", __name__, tag="Issues")

ISSUE = "/api/<int:pk>/"
CHANGE_ERRORS = {
    403: "Only the issue's creator may change or delete it",
    412: "If-Match names a version that is no longer current",
}
NOT_MODIFIED = {
    304: {"description": "If-None-Match names the current version", "headers": IssueHeaders}
}
# Each sort, each direction; ties broken by id.
ORDERS = {
    (sort, direction): Order(f"{sort}.{direction}", columns, direction == "desc")
    for sort, columns in [
        ("id", (Issue.id,)),
        ("created", (Issue.created_at, Issue.id)),
        ("updated", (Issue.updated_at, Issue.id)),
    ]
    for direction in ("asc", "desc")
}


def may_change(issue: Issue | sa.Row[Any], caller: Caller) -> bool:
    """Whether the caller may change or delete the issue: only its creator may."""
    return issue.created_by_id == caller.id


def get_own_issue(pk: int) -> Issue:
    """The issue, for a change by the caller, read without a lock: the change's `UPDATE` says
    which version it applies to (`change_own_issue`).

    :raise 404: no issue has this id.
    :raise 403: the caller did not create it: only its creator may change or delete an issue.
    :raise 412: `If-Match` names a version of the issue that is no longer current.
    """
    issue = get_or_404(Issue, pk)
    if not may_change(issue, token_auth.current_user):
        abort(403, f"Only the issue's creator ({issue.creator.username}) may change or delete it.")
    if request.if_match and not request.if_match.contains(issue.etag):
        abort(412, "The issue has changed since you read it (If-Match); fetch it and try again.")
    return issue


def change_own_issue(pk: int, change: Callable[[Issue], None]) -> Issue:
    """The caller's issue, read (`get_own_issue`) and changed by `change`, which commits.

    The write applies to the version read, and holds SQLite's write lock only from its first
    `UPDATE` to its commit (patch req/s, `bench/RESULTS.md`). When another request changed the
    issue in between, the version check in that `UPDATE` fails, nothing is written, and the
    issue is read and changed again: a change without `If-Match` then applies to the new
    version (never a `409`), one whose `If-Match` named the old version is a `412`.
    """
    while True:
        issue = get_own_issue(pk)
        try:
            change(issue)
        except StaleDataError:
            db.session.rollback()
            continue
        return issue


# What a change reads of the user it assigns the issue to (a Core row: a create costs less).
ASSIGNEE = sa.select(User.id, User.email, User.active).where(User.id == sa.bindparam("id"))


def named_assignee(fields: dict[str, Any], holder_id: int | None = None) -> sa.Row[Any] | None:
    """The user `assigned_to` names, if it names one: their id and address (whom an assignment
    email would go to).

    A deactivated user cannot be assigned, but stays on the issues they hold: `holder_id`, the
    issue's assignee so far, may be named again (a `PUT` of the issue as it was read).

    :raise 400: `assigned_to` names no user, or a deactivated one who does not hold the issue.
    """
    user_id = fields.get("assigned_to")
    if user_id is None:
        return None
    user = db.session.connection().execute(ASSIGNEE, {"id": user_id}).one_or_none()
    if user is None:
        errors.invalid({"assigned_to": [f"there is no user {user_id}"]})
    if not user.active and user_id != holder_id:
        errors.invalid({"assigned_to": [f"user {user_id} is deactivated"]})
    return user


# What a listing reads of each issue: columns, not ORM objects (a page loads 3 times faster),
# the creator's username and the labels' names looked up for the rows of the page only.
CREATED_BY = sa.select(User.username).where(User.id == Issue.created_by_id).scalar_subquery()
LISTED = (
    *(Issue.id, Issue.issue_id, Issue.title, Issue.description, Issue.assigned_to_id),
    *(CREATED_BY.label("created_by"), Issue.status, Issue.created_at, Issue.updated_at),
    Issue.comment_count,
    labels.NAMES.label("labels"),
)
# What a write answers with, of the issue it wrote (and its creator's username, the caller's).
WRITTEN = (
    *("id", "issue_id", "title", "description", "assigned_to_id", "status"),
    *("comment_count", "created_at", "updated_at"),
)
# What answering with one issue reads: the listing's columns and the ETag.
READ_ONE = sa.select(*LISTED, Issue.etag.label("etag")).where(Issue.id == sa.bindparam("pk"))


def filters(query: IssueQuery, me: Caller) -> dict[str, Any]:
    """The listing's filters but for its search words: the value each column must have (None
    for no assignee; a creator no user is, for none)."""
    where: dict[str, Any] = {}
    if query.status:
        where["status"] = query.status
    if query.assigned_to == "none":
        where["assigned_to_id"] = None
    elif query.assigned_to is not None:
        where["assigned_to_id"] = me.id if query.assigned_to == "me" else query.assigned_to
    if query.created_by == "me":
        where["created_by_id"] = me.id
    elif query.created_by is not None:
        creator = sa.select(User.id).where(User.username == query.created_by)
        where["created_by_id"] = db.session.scalar(creator)
    return where


def search(query: IssueQuery, me: Caller) -> tuple[sa.Select[Any], Callable[[], int | None] | None]:
    """The listing's filters and search words, as one unexecuted query (paginate orders it),
    and, for a search, how to count its issues when quicker than counting the query."""
    where = filters(query, me)
    labelled = labels.having(query.label)
    listed = sa.select(*LISTED).where(*Issue.having(where))
    connection = db.session.connection()
    # SQLite's search index knows the labels and the other filters: it finds them, words or not.
    if query.q is None and not (labelled.facets and connection.dialect.name == "sqlite"):
        return listed.where(*labelled.where), None if where else labelled.count
    asked = labelled if query.label else None
    found = text_search.find(connection, query.q, where, asked)
    return listed.where(found.where), found.count


ISSUE_PAGE = TypeAdapter(list[IssueOut])


def read_issue(pk: int) -> sa.Row[Any]:
    """The issue as an answer reads it (with its ETag and its labels' names).

    :raise 404: no issue has this id.
    """
    return get_or_404(Issue, pk, READ_ONE)


def page_json(rows: list[sa.Row[Any]]) -> bytes:
    """A page of issues as JSON, as `@bp.output` documents it, validated and written whole by
    pydantic-core: APIFlask would go item by item (a page of 30 takes a third longer)."""
    issues = ISSUE_PAGE.validate_python(rows, from_attributes=True)
    return ISSUE_PAGE.dump_json(issues) + b"\n"


def written(issue: Issue, labels: list[Label] | list[str]) -> SimpleNamespace:
    """What a write answers, from the issue as it wrote it and its `labels` (or their names):
    no creator loaded, since only its creator, the caller, writes an issue, and the issue not
    read back (create req/s: the read back was a tenth of a create, `bench/RESULTS.md`)."""
    return SimpleNamespace(
        **{column: getattr(issue, column) for column in WRITTEN},
        labels=labels,
        created_by=token_auth.current_user.username,
        etag=issue.etag,
    )


def respond(item: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """The issue (or comment) with its ETag; `304` when the caller's `If-None-Match` already
    has it."""
    if request.method in ("GET", "HEAD") and request.if_none_match.contains_weak(item.etag):
        response = Response(status=304)
        response.set_etag(item.etag)
        return response
    return item, status, {"ETag": f'"{item.etag}"', **(headers or {})}


@bp.get("/")
@bp.get("/api/")
@bp.auth_required(token_auth)
@bp.input(IssueQuery, location="query")
@bp.output(list[IssueOut], headers=PageHeaders)
def list_issues(query_data: IssueQuery) -> Any:
    """List issues, newest first, with filters, search, sort and paging."""
    order = ORDERS[query_data.sort, query_data.direction]
    listed, count = search(query_data, token_auth.current_user)
    rows, headers = paginate(listed, query_data, order, count)
    return Response(page_json(rows), 200, headers, mimetype="application/json")


@bp.post("/")
@bp.post("/api/")
@bp.auth_required(token_auth)
@bp.input(IssueIn, location="json_or_form")
@bp.output(IssueOut, status_code=201, headers=CreatedHeaders)
def create_issue(json_or_form_data: IssueIn) -> Any:
    """Create an issue; the caller is its creator."""
    issue, labelled = create(json_or_form_data.model_dump())
    return respond(written(issue, labelled), 201, {"Location": issue_url(issue.id)})


@bp.get(ISSUE)
@bp.auth_required(token_auth)
@bp.output(IssueOut, headers=IssueHeaders)
@bp.doc(responses=NOT_MODIFIED)
def get_issue(pk: int) -> Any:
    """Get one issue."""
    return respond(read_issue(pk))


@bp.put(ISSUE)
@bp.auth_required(token_auth)
@bp.input(IssueIn, location="json_or_form")
@bp.output(IssueOut, headers=IssueHeaders)
@bp.doc(responses=CHANGE_ERRORS)
def replace_issue(pk: int, json_or_form_data: IssueIn) -> Any:
    """Replace every writable field of an issue you created."""
    return change_issue(pk, json_or_form_data.model_dump())


@bp.patch(ISSUE)
@bp.auth_required(token_auth)
@bp.input(IssuePatch, location="json_or_form")
@bp.output(IssueOut, headers=IssueHeaders)
@bp.doc(responses=CHANGE_ERRORS)
def update_issue(pk: int, json_or_form_data: IssuePatch) -> Any:
    """Change the given fields of an issue you created."""
    return change_issue(pk, json_or_form_data.model_dump(exclude_unset=True))


@bp.delete(ISSUE)
@bp.auth_required(token_auth)
@bp.output({}, status_code=204)
@bp.doc(responses=CHANGE_ERRORS)
def delete_issue(pk: int) -> Any:
    """Delete an issue you created."""
    change_own_issue(pk, notifications.delete_issue)
    return ""


def change_issue(pk: int, fields: dict[str, Any]) -> Any:
    issue = change_own_issue(pk, lambda issue: change(issue, fields))
    # its labels by one Core statement: the ORM's lazy load of `issue.labels` was an eighth of a
    # patch (in-process CPU, `bench/RESULTS.md`, where a patch's time goes)
    return respond(written(issue, labels.names_of(issue.id)))


def create(fields: dict[str, Any]) -> tuple[Issue, list[Label]]:
    """A new issue by the caller, committed with its history's first event and the email it
    causes (API and pages alike), and its labels as set (no need to read them again).

    :raise 400: `assigned_to` names no user, or a deactivated one; `labels` names no label.
    """
    fields = labels.resolve(fields)
    assignee = named_assignee(fields)
    issue = Issue(created_by_id=token_auth.current_user.id)
    issue.change(fields)
    db.session.add(issue)
    notifications.save_issue(issue, None, assignee, events.created())
    return issue, fields["labels"]


def change(issue: Issue, fields: dict[str, Any]) -> None:
    """Change the issue (`get_own_issue`'s) and commit, with the events and the email it
    causes.

    :raise 400: `assigned_to` names no user, or a deactivated one who does not hold the issue;
        `labels` names no label.
    :raise StaleDataError: another request changed the issue since it was read (nothing is
        written): `change_own_issue` reads it again.
    """
    assignee = named_assignee(fields, issue.assigned_to_id)
    fields = labels.resolve(fields)
    happened = events.changed(issue, fields)
    previous_assignee_id = issue.assigned_to_id
    issue.change(fields)
    notifications.save_issue(issue, previous_assignee_id, assignee, happened)
