"""The issues pages: the list (the API's filters, search, sort and cursors), a new issue, and
editing one, where a save over a change made since the form opened overwrites nothing. One
issue's page is `sit.web.conversation`'s."""

from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from apiflask import HTTPError
from flask import flash, g, redirect, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy.orm.exc import StaleDataError

from sit import issues as api
from sit.extensions import db
from sit.models import Issue, Label, User
from sit.pagination import page_of
from sit.schemas import IssueIn, IssuePatch, IssueQuery
from sit.web.base import bp, form, problems, usernames

WRITABLE = ("title", "description", "assigned_to", "status")
LABEL_NAMES = sa.select(Label.name).order_by(Label.folded)
# Each row's assignee by name, read in the listing's own statement as its creator's is: a query
# of its own for the page's assignees was 0.13 ms of the issues page's 2.9 (in process).
ASSIGNEE = sa.select(User.username).where(User.id == Issue.assigned_to_id).scalar_subquery()
ACTIVE_USERS = sa.select(User).where(User.active).order_by(User.username)


def relative(url: str) -> str:
    """A paging link (made under `PUBLIC_URL`) as a path on this site."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def listing_query() -> IssueQuery:
    """The listing's query from the filter form: what is left empty is not filtered on.

    :raise ValidationError: a value the API would refuse too.
    """
    args = {k: v for k, v in request.args.items() if v and k in IssueQuery.model_fields}
    return IssueQuery.model_validate(args)


@bp.get("/issues/")
def list_issues() -> Any:
    """Issues, with the API listing's filters, search, sort and paging."""
    try:
        query = listing_query()
    except ValidationError as error:
        page = render_template(
            "web/issues.html", query=None, label_names=[], problems=problems(error)
        )
        return page, 400
    order = api.ORDERS[query.sort, query.direction]
    listed, count = api.search(query, g.me)
    page = page_of(listed.add_columns(ASSIGNEE.label("assignee")), query, order, count)
    links = {rel: relative(url) for rel, url in page.links.items()}
    return render_template(
        "web/issues.html",
        query=query,
        rows=page.rows,
        page=page,
        links=links,
        assignee=usernames({query.assigned_to}).get(query.assigned_to),  # the filter's
        label_names=db.session.connection().execute(LABEL_NAMES).scalars().all(),  # Core
    )


def issue_form(issue: Issue | None, status: int = 200, **context: Any) -> Any:
    """The new-issue or edit form, filled from the issue (or the form sent, `values`)."""
    values = context.pop("values", None) or {
        name: getattr(issue, "assigned_to_id" if name == "assigned_to" else name, None)
        for name in WRITABLE
    } | {"labels": [label.name for label in issue.labels] if issue else []}
    users = db.session.scalars(ACTIVE_USERS).all()
    if issue and issue.assigned_to_id and issue.assigned_to_id not in {u.id for u in users}:
        users.append(db.session.get(User, issue.assigned_to_id))  # deactivated, still holds it
    context["labels"] = db.session.scalars(sa.select(Label).order_by(Label.folded)).all()
    shown = as_shown(issue) if issue else None
    page = render_template(
        "web/issue_form.html", issue=issue, values=values, users=users, shown=shown, **context
    )
    return page, status


def fields_sent() -> dict[str, Any]:
    """The writable fields as the form sent them (the API's schema reads them): no label
    ticked is no label."""
    return form(*WRITABLE) | {"labels": request.form.getlist("labels")}


STALE = "The issue changed since you opened it, so it was left as it is: see what changed."


@bp.route("/issues/new", methods=["GET", "POST"])
def new_issue() -> Any:
    if request.method == "GET":
        return issue_form(None)
    try:
        issue, _ = api.create(IssueIn.model_validate(fields_sent()).model_dump())
    except (ValidationError, HTTPError) as error:
        return issue_form(None, 400, values=fields_sent(), problems=problems(error))
    return redirect(url_for("web.show_issue", pk=issue.id))


@bp.route("/issues/<int:pk>/edit", methods=["GET", "POST"])
def edit_issue(pk: int) -> Any:
    """Every writable field, for whoever may change the issue (`get_own_issue` decides).

    The form carries the version it was opened on and the values it showed: when the issue has
    changed since, the save changes nothing and the form shows what changed, with the new
    version, so that saving again overwrites knowingly.
    """
    issue = api.get_own_issue(pk)
    if request.method == "GET":
        return issue_form(issue, version=issue.etag)
    sent = fields_sent()
    if request.form.get("version") != issue.etag:
        changes = changed_since(issue, form(*(f"was_{name}" for name in WRITABLE)))
        return issue_form(issue, 409, values=sent, version=issue.etag, changes=changes)
    try:
        api.change(issue, IssueIn.model_validate(sent).model_dump())
    except (ValidationError, HTTPError) as error:
        db.session.rollback()
        return issue_form(issue, 400, values=sent, version=issue.etag, problems=problems(error))
    except StaleDataError:  # changed between this read and the save's UPDATE: as above
        db.session.rollback()
        return edit_issue(pk)
    return redirect(url_for("web.show_issue", pk=pk))


def as_shown(issue: Issue) -> dict[str, str]:
    """The writable fields as the edit form shows them (the assignee by username), kept in the
    form to say what changed if the issue changes before it is saved."""
    assignee = db.session.get(User, issue.assigned_to_id) if issue.assigned_to_id else None
    return {
        "title": issue.title,
        "description": issue.description,
        "assigned_to": assignee.username if assignee else "",
        "status": issue.status,
        "labels": ", ".join(sorted(label.name for label in issue.labels)),
    }


def changed_since(issue: Issue, was: dict[str, str]) -> list[tuple[str, str, str]]:
    """(field, what the form showed, what it is now) for each field changed since."""
    return [
        (name, was.get(f"was_{name}", ""), value)
        for name, value in as_shown(issue).items()
        if was.get(f"was_{name}", "") != value
    ]


@bp.post("/issues/<int:pk>/status")
def set_status(pk: int) -> Any:
    """Close or reopen the issue from its page, unless it changed since the page was read."""
    issue = api.get_own_issue(pk)
    if request.form.get("version") != issue.etag:
        flash(STALE)
    else:
        status = IssuePatch.model_validate(form("status")).model_dump(exclude_unset=True)
        try:
            api.change(issue, status)
        except StaleDataError:  # changed between this read and the save's UPDATE
            db.session.rollback()
            flash(STALE)
    return redirect(url_for("web.show_issue", pk=pk))
