"""People: who can be assigned, your own account, and the admins who manage every account.

Users are shown as their public names; to themselves and to admins, with their account's
fields too (`shown`). Who may change a user is decided in `get_changeable_user` only.
"""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint, abort

from sit import accounts, auth, errors
from sit.extensions import db, token_auth
from sit.models import User, get_or_404
from sit.pagination import Order, paginate
from sit.schemas import (
    MeOut,
    MePatch,
    NewUser,
    NewUserOut,
    PageHeaders,
    PageQuery,
    PasswordChange,
    TokenOut,
    UserCreatedHeaders,
    UserOut,
    UserPatch,
    user_url,
)

bp = APIBlueprint("users", __name__, tag="Users", url_prefix="/api/users")
BY_ID = Order("id", (User.id,), descending=False)
PUBLIC = (User.id, User.username, User.first_name, User.last_name)  # what `UserOut` shows

ADMINS_ONLY = {403: "Only admins create and change other users"}
CHANGE_ERRORS = {
    **ADMINS_ONLY,
    409: "The change would leave no active admin (the last one demoting or deactivating"
    " themselves)",
}


def shown(user: User) -> UserOut:
    """The user as the caller may see them: the account's fields only to themselves and admins."""
    me = token_auth.current_user
    return (MeOut if me.is_admin or me.id == user.id else UserOut).model_validate(user)


def public_columns(role: str) -> list[sa.Label[Any]]:
    """A user's `PUBLIC` columns, named for their role in a listing's row (`author_username`)."""
    return [column.label(f"{role}_{column.key}") for column in PUBLIC]


def public_user(row: sa.Row[Any], role: str) -> dict[str, Any]:
    """The user a listing's row names by `public_columns(role)`, as `UserOut` reads them."""
    return {column.key: row._mapping[f"{role}_{column.key}"] for column in PUBLIC}


def public_users(ids: set[int]) -> dict[int, dict[str, Any]]:
    """These users as `UserOut` reads them, by id, in one query."""
    rows = db.session.execute(sa.select(*PUBLIC).where(User.id.in_(ids))) if ids else []
    return {row.id: row._asdict() for row in rows}


def require_admin() -> None:
    """:raise 403: the caller is not an admin."""
    if not token_auth.current_user.is_admin:
        abort(403, "Only admins create and change other users; change yourself at /api/users/me/.")


def get_changeable_user(pk: int, fields: dict[str, Any]) -> User:
    """The user, for a change of `fields` by the caller.

    Everyone changes their own names, email and preferences at `/api/users/me/`; admins change
    any user here, their rights and activity too, as long as an active admin remains. The
    caller is an active admin, so the last one can only be the caller: no admin can demote or
    deactivate another who is the last.

    :raise 403: the caller is not an admin.
    :raise 404: no user has this id.
    :raise 409: the change would leave no active admin (the last one dropping their own admin
        rights or deactivating themselves).
    """
    require_admin()
    user = get_or_404(User, pk)
    stays = fields.get("is_admin", True) and fields.get("active", True)
    if user.is_admin and user.active and not stays and not other_active_admins(user):
        abort(409, "You are the last active admin: make another user an admin first.")
    return user


def other_active_admins(user: User) -> list[int]:
    """The ids of the active admins but `user`, locked until the change commits (PostgreSQL),
    so that two admins demoting each other at once cannot both succeed."""
    admins = sa.select(User.id).where(User.is_admin, User.active).with_for_update()
    return [pk for pk in db.session.scalars(admins) if pk != user.id]


@bp.get("/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[UserOut], headers=PageHeaders)
def list_users(query_data: PageQuery) -> Any:
    """List the active users (who can be assigned), by id."""
    active = sa.select(*PUBLIC).where(User.active)
    items, headers = paginate(active, query_data, BY_ID)
    return items, 200, headers


@bp.post("/")
@bp.auth_required(token_auth)
@bp.input(NewUser, location="json_or_form")
@bp.output(NewUserOut, status_code=201, headers=UserCreatedHeaders)
@bp.doc(responses={**ADMINS_ONLY, 409: "The username is taken"})
def create_user(json_or_form_data: NewUser) -> Any:
    """Create a user (admins); without a password, one is made up and answered this once."""
    require_admin()
    given = json_or_form_data.password
    fields = json_or_form_data.model_dump() | {"password": given or accounts.random_password()}
    try:
        user = accounts.create_user(**fields)
    except accounts.UsernameTaken as error:
        abort(409, str(error))
    answer = NewUserOut.model_validate(user)
    answer.password = None if given else fields["password"]
    return answer, 201, {"Location": user_url(user.id)}


@bp.get("/<int:pk>/")
@bp.auth_required(token_auth)
@bp.output(UserOut, description="Admins, and the user themselves, also get MeOut's fields")
def get_user(pk: int) -> UserOut:
    """Get one user, deactivated or not."""
    return shown(get_or_404(User, pk))


@bp.patch("/<int:pk>/")
@bp.auth_required(token_auth)
@bp.input(UserPatch, location="json_or_form")
@bp.output(MeOut)
@bp.doc(responses=CHANGE_ERRORS)
def update_user(pk: int, json_or_form_data: UserPatch) -> User:
    """Change a user's names, email, preferences, admin rights or activity (admins)."""
    fields = json_or_form_data.model_dump(exclude_unset=True)
    user = get_changeable_user(pk, fields)
    user.change(fields)
    db.session.commit()
    return user


@bp.get("/me/")
@bp.auth_required(token_auth)
@bp.output(MeOut)
def get_me() -> User:
    """Get the caller, with their account's fields."""
    return get_or_404(User, token_auth.current_user.id)


@bp.patch("/me/")
@bp.auth_required(token_auth)
@bp.input(MePatch, location="json_or_form")
@bp.output(MeOut)
def update_me(json_or_form_data: MePatch) -> User:
    """Change your names, email address or email preferences."""
    me = get_or_404(User, token_auth.current_user.id)
    me.change(json_or_form_data.model_dump(exclude_unset=True))
    db.session.commit()
    return me


@bp.post("/me/password")
@bp.auth_required(token_auth)
@bp.input(PasswordChange, location="json_or_form")
@bp.output(TokenOut)
@bp.doc(responses={400: "current_password is wrong", 429: "Too many wrong passwords"})
def change_password(json_or_form_data: PasswordChange) -> dict[str, Any]:
    """Change your password: answers a new token, and every earlier one stops working.

    A wrong current password counts as a failed login for your username, so that a stolen token
    cannot guess the password faster than `/get-token/` can.
    """
    me = auth.check_password(token_auth.current_user.username, json_or_form_data.current_password)
    if me is None:
        errors.invalid({"current_password": ["is not your password"]})
    me.set_password(json_or_form_data.new_password)
    db.session.commit()
    return auth.token_answer(me)
