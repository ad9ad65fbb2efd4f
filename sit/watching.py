"""Who watches an issue, and why: the one place of that rule, and the API of one's own choice.

An issue's watchers are its creator, its assignee, whoever commented on it and whoever
subscribed to it (`PUT /api/<id>/subscription`); an explicit ignore (`DELETE`, or a comment
email's unsubscribe link) beats every one of these reasons. Watchers get its comment emails.
"""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint
from sqlalchemy.dialects import postgresql, sqlite

from sit.extensions import db, token_auth
from sit.models import Comment, Issue, Subscription, get_or_404
from sit.schemas import SubscriptionOut

bp = APIBlueprint("watching", __name__, tag="Watching")

SUBSCRIPTION = "/api/<int:pk>/subscription"


def choices(issue_id: int) -> dict[int, bool]:
    """Each user's explicit choice about the issue: whether they ignore it (else subscribed)."""
    query = sa.select(Subscription.user_id, Subscription.ignored).filter_by(issue_id=issue_id)
    return dict(db.session.execute(query).all())


def commenters(issue_id: int) -> set[int]:
    query = sa.select(Comment.author_id).where(Comment.issue_id == issue_id).distinct()
    return set(db.session.scalars(query))


def watchers(issue: Issue) -> set[int]:
    """The ids of the users who watch the issue now."""
    chosen = choices(issue.id)
    automatic = {issue.created_by_id, issue.assigned_to_id} | commenters(issue.id)
    subscribed = {user_id for user_id, ignored in chosen.items() if not ignored}
    return {user_id for user_id in automatic | subscribed if user_id and not chosen.get(user_id)}


def ignores(issue_id: Any, user_id: Any) -> sa.ColumnElement[bool]:
    """Whether the user ignores the issue (columns or values, for a query)."""
    chosen = (Subscription.issue_id == issue_id) & (Subscription.user_id == user_id)
    return sa.exists().where(chosen, Subscription.ignored)


def reason(issue: Issue, user_id: int, ignored: bool | None, commented: bool) -> str | None:
    """Why the user watches the issue (the automatic reasons first), or None: they ignore it,
    or have no reason to watch it. `ignored`: their explicit choice, None for none; `commented`:
    whether they commented on it."""
    if ignored:
        return None
    if issue.created_by_id == user_id:
        return "creator"
    if issue.assigned_to_id == user_id:
        return "assignee"
    if commented:
        return "commented"
    return "manual" if ignored is False else None


def choose(issue_id: int, user_id: int, ignored: bool) -> None:
    """Record the user's choice to watch (`ignored` false) or ignore the issue, replacing any
    earlier one in one statement, so that two choices at once never collide."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(Subscription).values(
        issue_id=issue_id, user_id=user_id, ignored=ignored
    )
    keys = [Subscription.issue_id, Subscription.user_id]
    db.session.execute(insert.on_conflict_do_update(index_elements=keys, set_={"ignored": ignored}))


def own_state(issue: Any, user: Any) -> tuple[sa.Label[Any], sa.Label[Any]]:
    """The user's choice about the issue (`ignored`: None for none) and whether they commented
    on it (`commented`), as two columns of a statement: of their own (`OWN_STATE`), or of the
    statement that reads the issue for its page (`sit.web.conversation.ISSUE`)."""
    chosen = sa.select(Subscription.ignored).where(
        Subscription.issue_id == issue, Subscription.user_id == user
    )
    commented = sa.exists().where(Comment.issue_id == issue, Comment.author_id == user)
    return chosen.scalar_subquery().label("ignored"), commented.label("commented")


# Built once: two ORM queries built on each call took 0.37 ms of an issue's page, this 0.03
# (1.8 ms in-process, 0.53 of the API's GET in req/s: bench/RESULTS.md, issue 23).
OWN_STATE = sa.select(*own_state(sa.bindparam("issue"), sa.bindparam("user")))


def subscription(issue: Issue | sa.Row[Any], state: Any = None) -> dict[str, Any]:
    """The caller's subscription to the issue, as the API answers it; `state`: the caller's
    `own_state` columns, when read with the issue."""
    me = token_auth.current_user.id
    if state is None:
        state = db.session.connection().execute(OWN_STATE, {"issue": issue.id, "user": me}).one()
    why = reason(issue, me, state.ignored, state.commented)
    return {"subscribed": why is not None, "ignored": bool(state.ignored), "reason": why}


def change_subscription(pk: int, ignored: bool) -> dict[str, Any]:
    """:raise 404: no issue has this id (read locked: an issue deleted meanwhile is gone)."""
    issue = get_or_404(Issue, pk, lock=True)
    choose(issue.id, token_auth.current_user.id, ignored)
    answer = subscription(issue)
    db.session.commit()
    return answer


@bp.get(SUBSCRIPTION)
@bp.auth_required(token_auth)
@bp.output(SubscriptionOut)
def get_subscription(pk: int) -> dict[str, Any]:
    """Whether you watch an issue (get its comment emails), and why."""
    return subscription(get_or_404(Issue, pk))


@bp.put(SUBSCRIPTION)
@bp.auth_required(token_auth)
@bp.output(SubscriptionOut)
def subscribe(pk: int) -> dict[str, Any]:
    """Watch an issue: get its comment emails (and undo an ignore)."""
    return change_subscription(pk, ignored=False)


@bp.delete(SUBSCRIPTION)
@bp.auth_required(token_auth)
@bp.output(SubscriptionOut)
def ignore_issue(pk: int) -> dict[str, Any]:
    """Ignore an issue: no comment emails about it, whatever else would make you watch it."""
    return change_subscription(pk, ignored=True)
