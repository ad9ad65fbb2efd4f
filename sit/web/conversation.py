"""An issue's conversation on its page: comments and history interleaved, commenting, editing
one's own comments. Who may edit a comment is decided where the API decides it
(`sit.comments.get_changeable_comment`)."""

from typing import Any

import sqlalchemy as sa
from flask import g, redirect, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy.orm import aliased

from sit import clock, comments, labels, watching
from sit.extensions import db
from sit.issues import may_change
from sit.models import Comment, Event, Issue, User, get_or_404
from sit.schemas import CommentIn
from sit.web.base import bp, form, problems, usernames

# Built once, with the issue as a parameter, so SQLAlchemy reuses their compiled form.
ISSUE_PK = sa.bindparam("pk")
# The conversation: events and comments interleaved, oldest first (on a tie, a comment first),
# in one statement: two, sorted here, took 0.09 ms of an issue's page (1.2 in-process), this
# 0.08, and one round trip fewer on PostgreSQL. Each entry has its `kind`, and `by`, the username
# of its author or actor; a comment, whether it was `edited` (a flag, not a second date: 3 % of
# the page). A comment is its own entry: its `commented` event would say it twice.
# The events come first: their columns type the union's.
HISTORY = (
    sa.select(
        *(sa.literal("event").label("kind"), Event.id.label("id"), Event.actor_id.label("by_id")),
        *(User.username.label("by"), Event.event, Event.details, sa.null().label("body")),
        *(Event.created_at, sa.false().label("edited")),
    )
    .join(User, User.id == Event.actor_id)
    .where(Event.issue_id == ISSUE_PK, Event.event != "commented")
)
COMMENTS = (
    sa.select(
        *(sa.literal("comment"), Comment.id, Comment.author_id, User.username, sa.null()),
        *(sa.null(), Comment.body, Comment.created_at, Comment.updated_at != Comment.created_at),
    )
    .join(User, User.id == Comment.author_id)
    .where(Comment.issue_id == ISSUE_PK)
)
CONVERSATION = sa.union_all(HISTORY, COMMENTS).order_by("created_at", "kind", "id")
ASSIGNEE = aliased(User)
ISSUE = (
    sa.select(
        *(Issue.id, Issue.issue_id, Issue.title, Issue.description, Issue.status),
        *(Issue.created_at, Issue.assigned_to_id, Issue.created_by_id, Issue.etag.label("etag")),
        User.username.label("creator"),
        ASSIGNEE.username.label("assignee"),
        labels.CHIPS.label("labels"),  # a query of their own was 3 % of the page (in process)
        *watching.own_state(Issue.id, sa.bindparam("me")),  # and yours, 4.6 % (callgrind)
    )
    .join(User, User.id == Issue.created_by_id)
    .outerjoin(ASSIGNEE, ASSIGNEE.id == Issue.assigned_to_id)
    .where(Issue.id == ISSUE_PK)
)


def folded(label: list[str]) -> str:
    """A label's place among the issue's: by name, ignoring case (`Label.folded`)."""
    return label[0].casefold()


def timeline(pk: int) -> tuple[list[sa.Row[Any]], set[int]]:
    """The issue's conversation (`CONVERSATION`'s rows), and the ids of the users its events
    name (an assignment's `from` and `to`)."""
    entries = db.session.connection().execute(CONVERSATION, {"pk": pk}).all()  # Core rows
    assigned = (entry.details for entry in entries if entry.event == "assigned")
    return entries, {pk for details in assigned for pk in details.values() if pk}


@bp.get("/issues/<int:pk>")
def show_issue(pk: int) -> Any:
    return issue_page(pk)


def issue_page(pk: int, status: int = 200, **context: Any) -> Any:
    """The issue, its labels and its conversation, with the comment form (`context` fills it
    again after a refused comment)."""
    issue = get_or_404(Issue, pk, ISSUE, me=g.me.id)
    entries, named = timeline(pk)
    page = render_template(
        "web/issue.html",
        issue=issue,
        labels=[{"name": name, "color": color} for name, color in sorted(issue.labels, key=folded)],
        entries=entries,
        names=usernames(named),
        may_change=may_change(issue, g.me),
        me=g.me.id,
        watching=watching.subscription(issue, state=issue),
        **context,
    )
    return page, status


@bp.post("/issues/<int:pk>/comments")
def create_comment(pk: int) -> Any:
    try:
        comment = comments.post_comment(pk, CommentIn.model_validate(form("body")).body)
    except ValidationError as error:
        return issue_page(pk, 400, problems=problems(error), body=request.form.get("body", ""))
    return redirect(url_for("web.show_issue", pk=pk, _anchor=f"comment-{comment.id}"))


@bp.route("/issues/<int:pk>/comments/<int:cid>/edit", methods=["GET", "POST"])
def edit_comment(pk: int, cid: int) -> Any:
    """Your own comment's text (`get_changeable_comment` decides whose it is)."""
    comment = comments.get_changeable_comment(pk, cid)
    if request.method == "GET":
        return render_template("web/comment_form.html", comment=comment, body=comment.body)
    try:
        comment.edit(CommentIn.model_validate(form("body")).body, clock.utcnow())
    except ValidationError as error:
        db.session.rollback()
        page = render_template(
            "web/comment_form.html", comment=comment, body="", problems=problems(error)
        )
        return page, 400
    db.session.commit()
    return redirect(url_for("web.show_issue", pk=pk, _anchor=f"comment-{cid}"))


@bp.post("/issues/<int:pk>/subscription")
def change_subscription(pk: int) -> Any:
    """Watch the issue (its comment emails), or ignore it, whatever else would make you watch."""
    watching.change_subscription(pk, ignored=request.form.get("watch") != "yes")
    return redirect(url_for("web.show_issue", pk=pk))
