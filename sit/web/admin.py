"""Admins' pages: users (create, change rights and activity) and labels. Who may do it is
decided where the API decides it (`sit.users.require_admin`, `get_changeable_user`)."""

from typing import Any

import sqlalchemy as sa
from apiflask import HTTPError
from flask import flash, redirect, render_template, request, url_for
from pydantic import ValidationError

from sit import accounts, labels
from sit.extensions import db
from sit.models import Label, User, get_or_404
from sit.schemas import LabelIn, LabelPatch, NewUser, UserPatch
from sit.users import get_changeable_user, require_admin
from sit.web.base import bp, form, problems

NEW_USER = ("username", "email", "first_name", "last_name", "password")


def users_page(status: int = 200, **context: Any) -> Any:
    users = db.session.scalars(sa.select(User).order_by(User.username)).all()
    return render_template("web/admin_users.html", users=users, **context), status


@bp.get("/admin/users")
def list_users() -> Any:
    require_admin()
    return users_page()


@bp.post("/admin/users")
def create_user() -> Any:
    """Add a user; without a password, one is made up and shown this once, to hand over."""
    require_admin()
    sent = {k: v for k, v in form(*NEW_USER).items() if v} | {
        "is_admin": "is_admin" in request.form
    }
    try:
        fields = NewUser.model_validate(sent).model_dump()
        made_up = None if fields["password"] else accounts.random_password()
        user = accounts.create_user(**fields | {"password": fields["password"] or made_up})
    except (ValidationError, accounts.UsernameTaken) as error:
        found = {"username": [str(error)]} if isinstance(error, accounts.UsernameTaken) else None
        status = 409 if found else 400
        return users_page(status, values=sent, problems=found or problems(error))
    return users_page(201, created=user, password=made_up)


@bp.post("/admin/users/<int:pk>")
def update_user(pk: int) -> Any:
    """An admin's change of a user's rights and activity (the last active admin stays one)."""
    fields = {name: name in request.form for name in ("is_admin", "active")}
    fields = UserPatch.model_validate(fields).model_dump(exclude_unset=True)
    try:
        user = get_changeable_user(pk, fields)
    except HTTPError as error:
        if error.status_code != 409:
            raise
        return users_page(409, problems={"form": [error.message]})
    user.change(fields)
    db.session.commit()
    flash(f"{user.username} is saved.")
    return redirect(url_for("web.list_users"))


LABEL_FIELDS = ("name", "color", "description")


def labels_page(status: int = 200, **context: Any) -> Any:
    found = db.session.scalars(sa.select(Label).order_by(Label.folded)).all()
    return render_template("web/admin_labels.html", labels=found, **context), status


@bp.get("/admin/labels")
def list_labels() -> Any:
    labels.require_admin()
    return labels_page()


@bp.post("/admin/labels")
def create_label() -> Any:
    labels.require_admin()
    try:
        labels.create(LabelIn.model_validate(form(*LABEL_FIELDS)).model_dump())
    except (ValidationError, HTTPError) as error:
        return labels_page(getattr(error, "status_code", 400), problems=problems(error))
    return redirect(url_for("web.list_labels"))


@bp.post("/admin/labels/<int:pk>")
def update_label(pk: int) -> Any:
    """Change a label, or delete it (the form's `delete` button) from every issue."""
    labels.require_admin()
    label = get_or_404(Label, pk)
    try:
        if "delete" in request.form:
            db.session.delete(label)
            db.session.commit()
        else:
            fields = LabelPatch.model_validate(form(*LABEL_FIELDS)).model_dump(exclude_unset=True)
            labels.change(label, fields)
    except (ValidationError, HTTPError) as error:
        db.session.rollback()
        return labels_page(getattr(error, "status_code", 400), problems=problems(error))
    return redirect(url_for("web.list_labels"))
