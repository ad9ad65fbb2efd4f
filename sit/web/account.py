"""Signing in and out, and your own settings: names, email, preferences, password."""

from typing import Any

from apiflask import HTTPError
from flask import flash, g, redirect, render_template, request, session, url_for
from pydantic import ValidationError

from sit import auth, errors
from sit.extensions import db
from sit.models import User, get_or_404
from sit.schemas import MePatch, PasswordChange
from sit.web.base import bp, form, local_path, problems, sign_in_session

PREFERENCES = ("notify_assignments", "notify_digest", "notify_comments")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """Sign in with a username and password, counted by the login throttle as `/get-token/`
    is; then back to the page that asked for it (`next`)."""
    target = local_path(request.values.get("next"))
    if request.method == "GET":
        return render_template("web/sign_in.html", next=target)
    username, password = request.form.get("username", ""), request.form.get("password", "")
    try:
        user = auth.check_password(username, password) if username and password else None
    except HTTPError as error:  # 429: too many failed logins
        page = render_template("web/sign_in.html", next=target, error=error.message)
        return page, error.status_code, error.headers
    if user is None or not user.active:
        message = auth.DEACTIVATED if user else "Wrong username or password."
        return render_template("web/sign_in.html", next=target, error=message), 401
    sign_in_session(user)
    return redirect(target)


@bp.post("/sign-out")
def sign_out() -> Any:
    session.clear()
    return redirect(url_for("web.sign_in"))


@bp.route("/settings", methods=["GET", "POST"])
def settings() -> Any:
    """Your names, email and email preferences (what `PATCH /api/users/me/` changes)."""
    me = get_or_404(User, g.me.id)
    if request.method == "GET":
        return render_template("web/settings.html", user=me)
    fields: dict[str, Any] = form("first_name", "last_name", "email")
    fields |= {name: name in request.form for name in PREFERENCES}
    try:
        me.change(MePatch.model_validate(fields).model_dump(exclude_unset=True))
    except ValidationError as error:
        page = render_template("web/settings.html", user=me, problems=problems(error))
        return page, 400
    db.session.commit()
    flash("Your settings are saved.")
    return redirect(url_for("web.settings"))


@bp.post("/settings/password")
def change_password() -> Any:
    """Change your password: every token and every other session ends; this one goes on."""
    me = get_or_404(User, g.me.id)
    try:
        change = PasswordChange.model_validate(form("current_password", "new_password"))
        if auth.check_password(me.username, change.current_password) is None:
            errors.invalid({"current_password": ["is not your password"]})
    except (ValidationError, HTTPError) as error:
        status = error.status_code if isinstance(error, HTTPError) else 400
        page = render_template("web/settings.html", user=me, problems=problems(error))
        return page, status
    me.set_password(change.new_password)
    db.session.commit()
    sign_in_session(me)
    flash("Your password is changed; every other session and token has ended.")
    return redirect(url_for("web.settings"))
