"""Comments on an issue: anyone signed in reads and writes them; who may edit or delete one is
decided in `get_changeable_comment` only. A comment's creation and deletion are changes of its
issue too: its `comments` count, `updated_at` and ETag, and an event of its history."""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint, abort
from flask import Response, request
from pydantic import TypeAdapter

from sit import clock, events, notifications
from sit.extensions import db, token_auth
from sit.issues import respond
from sit.models import ISSUE_EXISTS, Comment, Issue, User, get_or_404
from sit.pagination import Order, paginate
from sit.schemas import (
    CommentCreatedHeaders,
    CommentHeaders,
    CommentIn,
    CommentOut,
    PageHeaders,
    PageQuery,
    comment_url,
)
from sit.users import public_columns, public_user
from sit.webhooks import messages

bp = APIBlueprint("comments", __name__, tag="Comments", url_prefix="/api/<int:pk>/comments")

COMMENT = "/<int:cid>/"
OLDEST_FIRST = Order("id", (Comment.id,), descending=False)
LISTED = (
    *(Comment.id, Comment.issue_id, Comment.body, Comment.created_at, Comment.updated_at),
    *public_columns("author"),
)
COMMENT_PAGE = TypeAdapter(list[CommentOut])
NOT_MODIFIED = {
    304: {"description": "If-None-Match names the current version", "headers": CommentHeaders}
}


def comment_of(pk: int, cid: int, *, lock: bool = False) -> Comment:
    """The comment `cid` of the issue `pk`; with `lock`, read locked as `get_or_404` says.

    :raise 404: there is no such comment on that issue (nor on any other).
    """
    comment = get_or_404(Comment, cid, lock=lock)
    if comment.issue_id != pk:
        abort(404, f"Issue {pk} has no comment {cid}.")
    return comment


def get_changeable_comment(pk: int, cid: int, *, deleting: bool = False) -> Comment:
    """The comment, for an edit (or, `deleting`, a deletion) by the caller, read locked; a
    deletion locks its issue first (its count changes), as a new comment does.

    :raise 404: there is no such comment on that issue.
    :raise 403: only its author edits a comment; its author, the issue's creator or an admin
        deletes it.
    :raise 412: `If-Match` names a version of the comment that is no longer current.
    """
    if deleting:
        get_or_404(Issue, pk, lock=True)
    comment = comment_of(pk, cid, lock=True)
    me = token_auth.current_user
    may_delete = deleting and (me.is_admin or comment.issue.created_by_id == me.id)
    if comment.author_id != me.id and not may_delete:
        who = "its author, the issue's creator or an admin" if deleting else "its author"
        abort(403, f"Only {who} may {'delete' if deleting else 'edit'} this comment.")
    if request.if_match and not request.if_match.contains(comment.etag):
        abort(412, "The comment has changed since you read it (If-Match); fetch it and try again.")
    return comment


def page_json(rows: list[sa.Row[Any]]) -> bytes:
    """A page of comments as JSON, as `@bp.output` documents it."""
    items = [{**row._mapping, "author": public_user(row, "author")} for row in rows]
    return COMMENT_PAGE.dump_json(COMMENT_PAGE.validate_python(items)) + b"\n"


@bp.get("/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[CommentOut], headers=PageHeaders)
def list_comments(pk: int, query_data: PageQuery) -> Any:
    """List an issue's comments, oldest first."""
    get_or_404(Issue, pk, ISSUE_EXISTS)
    listed = sa.select(*LISTED).join(User, User.id == Comment.author_id)
    rows, headers = paginate(listed.where(Comment.issue_id == pk), query_data, OLDEST_FIRST)
    return Response(page_json(rows), 200, headers, mimetype="application/json")


@bp.post("/")
@bp.auth_required(token_auth)
@bp.input(CommentIn, location="json_or_form")
@bp.output(CommentOut, status_code=201, headers=CommentCreatedHeaders)
def create_comment(pk: int, json_or_form_data: CommentIn) -> Any:
    """Comment on an issue."""
    comment = post_comment(pk, json_or_form_data.body)
    return respond(comment, 201, {"Location": comment_url(pk, comment.id)})


def post_comment(pk: int, body: str) -> Comment:
    """The caller's new comment on the issue, committed with its event and its emails to the
    watchers (API and pages alike).

    :raise 404: no issue has this id.
    """
    issue = get_or_404(Issue, pk, lock=True)
    comment = Comment(issue=issue, author_id=token_auth.current_user.id, body=body)
    issue.comment_count += 1
    issue.updated_at = comment.created_at = comment.updated_at = clock.utcnow()
    db.session.add(comment)
    db.session.flush()  # the comment's id, which its event names
    events.write(pk, events.commented(comment))
    notifications.comment_posted(comment)
    messages.queue_comment("comment.created", comment, comment.author_id)
    db.session.commit()
    return comment


@bp.get(COMMENT)
@bp.auth_required(token_auth)
@bp.output(CommentOut, headers=CommentHeaders)
@bp.doc(responses=NOT_MODIFIED)
def get_comment(pk: int, cid: int) -> Any:
    """Get one comment."""
    return respond(comment_of(pk, cid))


@bp.patch(COMMENT)
@bp.auth_required(token_auth)
@bp.input(CommentIn, location="json_or_form")
@bp.output(CommentOut, headers=CommentHeaders)
@bp.doc(responses={403: "Only its author edits a comment", 412: "If-Match is not current"})
def update_comment(pk: int, cid: int, json_or_form_data: CommentIn) -> Any:
    """Change a comment you wrote."""
    comment = get_changeable_comment(pk, cid)
    comment.edit(json_or_form_data.body, clock.utcnow())
    messages.queue_comment("comment.updated", comment, comment.author_id)
    db.session.commit()
    return respond(comment)


@bp.delete(COMMENT)
@bp.auth_required(token_auth)
@bp.output({}, status_code=204)
@bp.doc(
    responses={
        403: "Only its author, the issue's creator or an admin deletes a comment",
        412: "If-Match is not current",
    }
)
def delete_comment(pk: int, cid: int) -> Any:
    """Delete a comment (yours, one on an issue you created, or any as an admin)."""
    comment = get_changeable_comment(pk, cid, deleting=True)
    comment.issue.comment_count -= 1
    messages.queue_comment("comment.deleted", comment, token_auth.current_user.id)
    db.session.delete(comment)
    events.write(pk, events.comment_deleted(comment))
    db.session.commit()
    return ""
