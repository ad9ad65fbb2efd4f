"""The pages' blueprint: who is signed in (the session), CSRF, error pages, form errors.

A session names a user and the token generation it was signed in under, so a new password or
`flask sit revoke-tokens` ends it as it ends the user's tokens. The signed-in user becomes the
caller the API's functions read (`token_auth.current_user`), so `get_own_issue`,
`require_admin` and the rest decide for a page exactly as for an API call. A session never
authenticates an API call: the API reads tokens only.
"""

import functools
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from apiflask import APIBlueprint, HTTPError, abort
from flask import current_app, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect, generate_csrf
from markupsafe import Markup, escape
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from sit import auth, errors
from sit.extensions import db
from sit.models import User

# An APIBlueprint only so that APIFlask, which takes every blueprint for one, can leave it out
# of the OpenAPI document: pages are no API.
bp = APIBlueprint(
    "web",
    __name__,
    enable_openapi=False,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
csrf = CSRFProtect()

OPEN_PAGES = frozenset({"web.sign_in", "web.static"})  # every other page needs a session
CSRF_SECRET = "csrf_token"  # where Flask-WTF keeps it: the session (and the signed token, `g`)
# What every page's head and header link to, by name (`site_links`).
SITE_LINKS = {
    "css": ("web.static", {"filename": "site.css"}),
    "icon": ("web.static", {"filename": "favicon.svg"}),
    "js": ("web.static", {"filename": "site.js"}),
    "issues": ("web.list_issues", {}),
    "mine": ("web.list_issues", {"assigned_to": "me", "status": "O"}),
    "new": ("web.new_issue", {}),
    "settings": ("web.settings", {}),
    "users": ("web.list_users", {}),
    "labels": ("web.list_labels", {}),
    "sign_out": ("web.sign_out", {}),
}


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, `Secure` whenever the request came over https (through a proxy
    `PROXY_FIX` trusts, too), not only when configured so."""

    def get_cookie_secure(self, app: Any) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def sign_in_session(user: Any) -> None:
    """Start a session for the user, under their current token generation."""
    session.clear()
    session.permanent = True  # for PERMANENT_SESSION_LIFETIME: TOKEN_MAX_AGE
    session["uid"], session["gen"] = user.id, user.token_generation


def same_origin() -> None:
    """:raise 403: the browser says the form was sent from another site."""
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if request.headers.get("Sec-Fetch-Site") == "cross-site" or (origin and origin != own):
        abort(403, "This form was sent from another site; nothing was changed.")


@bp.before_request
def load_session() -> Any:
    """Check a form's origin and CSRF token, load the session's user, and send whoever is not
    signed in to the sign-in page, which brings them back here."""
    if request.method == "POST":
        same_origin()
        csrf.protect()
    uid = session.get("uid")
    g.me = auth.current_caller(uid, session.get("gen")) if uid is not None else None
    if uid is not None and g.me is None:
        session.clear()  # a new password, revoked tokens, a deactivated account
    if g.me is not None:
        g.flask_httpauth_user = g.me  # where `token_auth.current_user` reads the caller
    elif request.endpoint not in OPEN_PAGES:
        return redirect(url_for("web.sign_in", next=local_path(request.full_path)))
    return None


def csrf_field() -> Markup:
    """A form's hidden CSRF field (the templates' `csrf_field`), with the session's token."""
    return Markup(f'<input type="hidden" name="csrf_token" value="{csrf_token()}">')


def csrf_token() -> str:
    """Flask-WTF's CSRF token of the session, signed once for each session by each process:
    Flask-WTF's `generate_csrf` signs it anew on every page, which was 6 % of an issue's page
    (callgrind: 5.54 M instructions, 5.23 M without). The timestamp the signature carries is
    never checked (`WTF_CSRF_TIME_LIMIT` is None: a token lasts as long as its session)."""
    secret = session.get(CSRF_SECRET)
    if secret is None:
        return generate_csrf()  # the session's first page: Flask-WTF makes its secret
    return signed_csrf(secret, current_app.secret_key)


@functools.lru_cache(maxsize=4096)
def signed_csrf(secret: str, secret_key: str) -> str:
    g.pop(CSRF_SECRET, None)  # Flask-WTF's token of an earlier `secret`, in a `g` tests share
    return generate_csrf()  # of the session's `secret`


def site_links() -> dict[str, str]:
    """The paths of `SITE_LINKS` (the templates' `site_links`), built once for each path the
    app is mounted at (`SCRIPT_NAME`): a `url_for` each on every page was 7 % of an issue's
    page (in process: 1.28 ms, 1.19 without)."""
    return _links(request.script_root)


@functools.lru_cache(maxsize=8)
def _links(script_root: str) -> dict[str, str]:
    return {name: url_for(endpoint, **args) for name, (endpoint, args) in SITE_LINKS.items()}


def local_path(target: str | None) -> str:
    """A path on this site to go back to (never another site's URL), else the issues page."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or "\\" in target:
        return url_for("web.list_issues")
    return parts.path + (f"?{parts.query}" if parts.query else "")


@bp.errorhandler(HTTPError)
def api_error_page(error: HTTPError) -> Any:
    """What the API's functions raise (`abort`, `errors.invalid`), as a page."""
    found = error.extra_data.get("errors")
    detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in found.items()) if found else None
    return error_page(error.status_code, detail or error.message, error.headers)


@bp.errorhandler(HTTPException)
def http_error_page(error: HTTPException) -> Any:
    """Werkzeug's (a 404 of `get_or_404`, a missing CSRF token's 400), as a page."""
    return error_page(error.code or 500, error.description or "")


def error_page(status: int, detail: str, headers: Any = None) -> Any:
    return render_template("web/error.html", status=status, detail=detail), status, headers or {}


def form(*names: str) -> dict[str, str]:
    """The form's fields of these names (never its CSRF token, which the API's schemas, strict
    about unknown fields, would refuse)."""
    return {name: request.form[name] for name in names if name in request.form}


def problems(error: ValidationError | HTTPError) -> dict[str, list[str]]:
    """What is wrong with each field of a form, as the API would say it in a `400`."""
    if isinstance(error, HTTPError):
        return dict(error.extra_data.get("errors") or {"form": [error.message]})
    found: dict[str, list[str]] = {}
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "form"
        found.setdefault(field, []).append(errors.message(item["msg"]))
    return found


USERNAMES = sa.select(User.id, User.username).where(
    User.id.in_(sa.bindparam("ids", expanding=True))
)


def usernames(ids: set[Any]) -> dict[int, str]:
    """The username of each user id among `ids` (a page's assignees: one query, on the session's
    connection: through the ORM, a page of 30's took 0.12 ms, this way 0.07)."""
    named = [pk for pk in ids if isinstance(pk, int)]
    if not named:
        return {}
    return dict(db.session.connection().execute(USERNAMES, {"ids": named}).all())


def when(at: datetime) -> Markup:
    """A moment as the pages show it (the `when` filter): UTC to the minute, in a `<time>`. A
    filter, not a macro, and no strftime: each cost as much again as this (an issue's page shows
    one per comment and event, eleven on the bench's: its template took 0.34 ms in-process, now
    0.26; the issues page one per issue)."""
    iso = at.isoformat(timespec="seconds")
    return Markup(f'<time datetime="{iso}">{iso[:10]} {iso[11:16]} UTC</time>')  # no <, >, & or "


def status(code: str) -> Markup:
    """An issue's status as the pages show it (the `status` filter), a filter for the reason
    `when` is one: a macro per row of the issues page cost a tenth of its template."""
    name = "Open" if code == "O" else "Closed"
    return Markup(f'<span class="status status-{escape(code)}">{name}</span>')
