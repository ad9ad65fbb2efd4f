"""One-click unsubscribe (RFC 8058): the signed link in each email turns one kind of email off,
or, in a comment email, ignores that email's issue.

The token is the capability: it names one user and one kind of email (and the issue, for a
comment email), and whoever holds it may turn that kind off (ignore that issue), nothing else.
So the `POST` needs no sign-in, no session and no CSRF token (a forged cross-site form would
have to know the token). A `GET` only shows a page whose button
makes that `POST`: it changes nothing, as virus scanners and link previews follow links.
"""

from typing import Any

from flask import Blueprint, current_app, render_template, request
from itsdangerous import BadSignature
from werkzeug.exceptions import NotFound

from sit import errors, signing, watching
from sit.extensions import db
from sit.models import NOTIFY, Issue, User

bp = Blueprint("unsubscribe", __name__, url_prefix="/unsubscribe")

SALT = "sit.unsubscribe"  # not the access tokens' salt: neither token ever passes as the other
KINDS = {
    "assignment": "the email sent when an issue is assigned to you",
    "digest": "the digest of the issues assigned to you",
    "comment": "the comment emails about issue #{issue_id}, {title}",
}
INVALID = "This unsubscribe link is not valid: it was cut short, changed, or not made here."


def unsubscribe_url(user_id: int, kind: str, issue_id: int | None = None) -> str:
    """The link that turns `kind` (a key of `NOTIFY`) off for the user, or, given the issue (a
    comment email's), ignores that issue for them; under `PUBLIC_URL`. It does not expire: an
    old email's link keeps working."""
    claims = {"user": user_id, "kind": kind} | ({"issue": issue_id} if issue_id else {})
    token = signing.serializer(SALT).dumps(claims)
    return f"{current_app.config['PUBLIC_URL']}/unsubscribe/{token}"


def get_subscription(token: str) -> tuple[User, str, Issue | None]:
    """The user, the kind of email and, for a comment email, the issue the token names;
    deactivated users too (what they ask for then holds if they are reactivated).

    :raise 404: the token was not signed here as an unsubscribe token, or names no user, or
        a comment email's issue that is gone.
    """
    try:
        claims: Any = signing.serializer(SALT).loads(token)
        user_id, kind = int(claims["user"]), claims["kind"]
        issue_id = int(claims["issue"]) if kind == "comment" else None
    except (BadSignature, TypeError, KeyError, ValueError):
        raise NotFound(INVALID) from None
    user = db.session.get(User, user_id) if kind in NOTIFY else None
    issue = db.session.get(Issue, issue_id) if issue_id else None
    if user is None or (issue_id and issue is None):
        raise NotFound(INVALID)
    return user, kind, issue


def what(kind: str, issue: Issue | None) -> str:
    """The emails the link stops, in words."""
    return KINDS[kind].format(issue_id=issue.issue_id, title=issue.title) if issue else KINDS[kind]


@bp.get("/<token>")
def show_unsubscribe(token: str) -> str:
    """A page whose button unsubscribes; showing it changes nothing."""
    user, kind, issue = get_subscription(token)
    return render_template("unsubscribe.html", step="ask", user=user, what=what(kind, issue))


@bp.post("/<token>")
def unsubscribe(token: str) -> str:
    """Turn the kind of email off, or ignore the comment email's issue: the page's button, or a
    mail provider's one-click `POST` (`List-Unsubscribe=One-Click` as a form; any body, or
    none, is accepted)."""
    user, kind, issue = get_subscription(token)
    if issue is None:
        user.unsubscribe(kind)
    else:
        watching.choose(issue.id, user.id, ignored=True)
    db.session.commit()
    done = {"user": user, "issue": issue, "what": what(kind, issue)}
    return render_template("unsubscribe.html", step="done", **done)


@bp.errorhandler(NotFound)
def not_found(error: NotFound) -> Any:
    """A page for a browser; problem+json for anything else (a mail provider, a script)."""
    if request.accept_mimetypes.best_match([errors.PROBLEM_JSON, "text/html"]) == "text/html":
        return render_template("unsubscribe.html", step="invalid", message=INVALID), 404
    return errors.problem(404, INVALID)
