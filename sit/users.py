"""Who can be assigned: every user's public name, and the caller's own email."""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint

from sit.extensions import token_auth
from sit.models import User, get_or_404
from sit.pagination import Order, paginate
from sit.schemas import MeOut, PageHeaders, PageQuery, UserOut

bp = APIBlueprint("users", __name__, tag="Users", url_prefix="/api/users")
BY_ID = Order("id", (User.id,), descending=False)


@bp.get("/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[UserOut], headers=PageHeaders)
def list_users(query_data: PageQuery) -> Any:
    """List users, by id."""
    listed = (User.id, User.username, User.first_name, User.last_name)
    items, headers = paginate(sa.select(*listed), query_data, BY_ID)
    return items, 200, headers


@bp.get("/<int:pk>/")
@bp.auth_required(token_auth)
@bp.output(UserOut)
def get_user(pk: int) -> User:
    """Get one user."""
    return get_or_404(User, pk)


@bp.get("/me/")
@bp.auth_required(token_auth)
@bp.output(MeOut)
def get_me() -> User:
    """Get the caller, with their email address."""
    return get_or_404(User, token_auth.current_user.id)
