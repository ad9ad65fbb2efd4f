"""The web interface: server-rendered pages over the same functions the API views call."""

from typing import Any

from apiflask import APIFlask
from flask import redirect, request, url_for

from sit.web import account, admin, conversation, issues, markdown
from sit.web.base import SessionInterface, bp, csrf, csrf_field, site_links, status, when

__all__ = ["account", "admin", "bp", "conversation", "init_app", "issues"]

SETTINGS = {
    "SESSION_COOKIE_SAMESITE": "Lax",  # HttpOnly is Flask's default; Secure over https
    "SESSION_REFRESH_EACH_REQUEST": False,  # a session lasts TOKEN_MAX_AGE from sign-in, as a token
    "WTF_CSRF_CHECK_DEFAULT": False,  # the pages check it (`base.load_session`), the API never
    "WTF_CSRF_TIME_LIMIT": None,  # a token lasts as long as its session
}


def browser_at_root() -> Any:
    """`GET /` from a browser (HTML preferred, no Authorization) opens the pages; a client
    asking for JSON, or sending a token, gets the API's list as before."""
    if request.path != "/" or request.method not in ("GET", "HEAD"):
        return None
    wants = request.accept_mimetypes.best_match(["application/json", "text/html"])
    if wants == "text/html" and "Authorization" not in request.headers:
        return redirect(url_for("web.list_issues"))
    return None


def init_app(app: APIFlask) -> None:
    app.config.update(SETTINGS)
    app.config["PERMANENT_SESSION_LIFETIME"] = app.config["TOKEN_MAX_AGE"]
    app.session_interface = SessionInterface()
    csrf.init_app(app)
    app.jinja_env.filters["markdown"] = markdown.render
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["status"] = status
    app.jinja_env.globals["site_links"] = site_links
    app.jinja_env.globals["csrf_field"] = csrf_field
    app.before_request(browser_at_root)
    app.register_blueprint(bp)
