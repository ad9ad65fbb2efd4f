"""Adding a user: the one function behind `flask sit create-user`, `first-user` and
`POST /api/users/`."""

import secrets

from sqlalchemy.exc import IntegrityError

from sit.extensions import db
from sit.models import User


class UsernameTaken(Exception):
    """Another user has this username."""


def random_password() -> str:
    """16 URL-safe characters (96 random bits), for a user whose password nobody chose."""
    return secrets.token_urlsafe(12)


def create_user(
    username: str,
    email: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    is_admin: bool = False,
) -> User:
    """Add a user and commit. The caller has checked the fields (`schemas.NewUser`).

    :raise UsernameTaken: the username is taken, whoever took it first (nothing is written).
    """
    user = User(
        username=username,
        email=email,
        first_name=first_name,
        last_name=last_name,
        is_admin=is_admin,
    )
    user.set_password(password)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:  # the unique username: taken meanwhile, perhaps by another host
        db.session.rollback()
        raise UsernameTaken(f"username: {username!r} is taken") from None
    return user
