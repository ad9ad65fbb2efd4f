"""Who is calling: passwords, stateless access tokens, the login throttle and `/get-token/`."""

import functools
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint, HTTPError, abort
from flask import current_app, g, request
from itsdangerous import BadSignature
from werkzeug.security import check_password_hash, generate_password_hash

from sit import clock, errors, signing
from sit.extensions import db, token_auth
from sit.models import LoginFailure, User
from sit.schemas import Credentials, TokenOut

bp = APIBlueprint("auth", __name__, tag="Authentication")

TOKEN_SALT = "sit.access-token"
THROTTLE_LIMIT = 10  # failed logins for one username ...
ADDRESS_LIMIT = 50  # ... or from one client address, over any usernames (password spraying) ...
THROTTLE_WINDOW = timedelta(minutes=5)  # ... within this window lock that username or address out


@dataclass(frozen=True)
class Caller:
    """Who a valid access token proves the caller is (`token_auth.current_user`)."""

    id: int
    username: str
    is_admin: bool


# The one lookup an authenticated request makes for its caller: a Core row, not an ORM object.
CALLER = sa.select(User.username, User.token_generation, User.active, User.is_admin).where(
    User.id == sa.bindparam("id")
)
DEACTIVATED = "This account has been deactivated; an admin can reactivate it."
ASK_BASIC = {"WWW-Authenticate": 'Basic realm="SIT"'}


def issue_token(user: User, expires_in: int) -> str:
    """A signed token naming the user and their token generation; nothing is stored."""
    expires = int(clock.utcnow().timestamp()) + expires_in
    return signing.serializer(TOKEN_SALT).dumps(
        {"sub": user.id, "gen": user.token_generation, "exp": expires}
    )


def caller_for_token(token: str) -> Caller | None:
    """The caller a token proves, or None, with the reason left in `g.token_problem`.

    The user's current token generation and activity are read on every request, so a
    revocation (a new password, `flask sit revoke-tokens`) or a deactivation applies at once in
    every process.
    """
    try:
        claims: Any = signing.serializer(TOKEN_SALT).loads(token)
        user_id, generation, expires = claims["sub"], claims["gen"], claims["exp"]
    except (BadSignature, TypeError, KeyError):
        g.token_problem = "The access token is malformed or was not signed by this server."
        return None
    if expires <= clock.utcnow().timestamp():
        g.token_problem = "The access token has expired; get a new one from /get-token/."
        return None
    return current_caller(user_id, generation)


def current_caller(user_id: int, generation: int) -> Caller | None:
    """The user a token or a web session names, while active and at the token generation the
    token or session was made under; else None, with the reason in `g.token_problem`."""
    row = db.session.connection().execute(CALLER, {"id": user_id}).one_or_none()
    if row is not None and not row.active:
        g.token_problem = DEACTIVATED
        return None
    if row is None or row.token_generation != generation:
        g.token_problem = "The access token has been revoked; get a new one from /get-token/."
        return None
    return Caller(user_id, row.username, row.is_admin)


@token_auth.verify_token
def verify_token(token: str) -> Caller | None:
    return caller_for_token(token)


@token_auth.error_processor
def token_error(error: HTTPError) -> Any:
    missing = "Send an access token: 'Authorization: Bearer <token>' (or 'Token <token>')."
    return errors.problem(error.status_code, g.get("token_problem", missing))


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash("a password no user has")


def authenticate(username: str, password: str) -> User | None:
    """The user, if the password is theirs; an unknown username costs the same hashing time."""
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        check_password_hash(_dummy_hash(), password)
        return None
    return user if user.check_password(password) else None


def client_address() -> str | None:
    """The client's address: the connection's, or the one a proxy `PROXY_FIX` trusts set."""
    return request.remote_addr


def claim_attempt(username: str, address: str | None) -> LoginFailure:
    """Count this login as failed, committed before the password is checked.

    Every worker then sees it while the slow hash runs, so parallel guesses cannot all slip
    under the limit; a login that succeeds clears the username's count again (not the
    address's: a sprayer who guesses one password right is still spraying).
    """
    now = clock.utcnow()
    db.session.execute(
        sa.delete(LoginFailure).where(LoginFailure.failed_at <= now - THROTTLE_WINDOW)
    )
    attempt = LoginFailure(username=username, address=address, failed_at=now)
    db.session.add(attempt)
    db.session.commit()
    return attempt


def seconds_until_allowed(counted: sa.ColumnElement[bool], limit: int) -> int:
    """0 when the failed logins in the window that `counted` selects, the one just claimed
    included, are within `limit`; else how long until enough of the earlier ones leave it."""
    now = clock.utcnow()
    oldest_counted = db.session.scalar(
        sa.select(LoginFailure.failed_at)
        .where(counted, LoginFailure.failed_at > now - THROTTLE_WINDOW)
        .order_by(LoginFailure.failed_at.desc(), LoginFailure.id.desc())
        .offset(limit)
        .limit(1)
    )
    if oldest_counted is None:
        return 0
    return max(1, math.ceil((oldest_counted + THROTTLE_WINDOW - now).total_seconds()))


def throttled(username: str, address: str | None) -> tuple[int, str]:
    """Seconds to wait, and why, when this username or this address has failed too often."""
    wait = seconds_until_allowed(LoginFailure.username == username, THROTTLE_LIMIT)
    if wait:
        return wait, "Too many failed logins for this username"
    if address is not None:
        wait = seconds_until_allowed(LoginFailure.address == address, ADDRESS_LIMIT)
    return wait, "Too many failed logins from your address"


def check_password(username: str, password: str) -> User | None:
    """The user, if the password is theirs, counted by the login throttle: a wrong password
    stays counted as a failed login for the username, a right one clears its count (unless the
    account is deactivated: that login fails too).

    :raise 429: 10 failed logins for this username, or 50 from the client's address, within 5
        minutes (the attempt is not counted).
    """
    attempt = claim_attempt(username, client_address())
    wait, reason = throttled(username, attempt.address)
    if wait:
        db.session.delete(attempt)
        db.session.commit()
        abort(429, f"{reason}; try again in {wait} s.", headers={"Retry-After": str(wait)})
    user = authenticate(username, password)
    if user is not None and user.active:
        db.session.execute(sa.delete(LoginFailure).where(LoginFailure.username == username))
        db.session.commit()
    return user


def log_in(username: str, password: str) -> User:
    """The active user, when the password is theirs and the username is not throttled.

    :raise 429: too many failed logins for this username or address (`check_password`).
    :raise 401: wrong username or password (the attempt stays counted), or, only to whoever
        knows the password, a deactivated account.
    """
    user = check_password(username, password)
    if user is None:
        abort(401, "Wrong username or password.", headers=ASK_BASIC)
    if not user.active:
        abort(401, DEACTIVATED, headers=ASK_BASIC)
    return user


def token_answer(user: User) -> dict[str, Any]:
    """What `/get-token/` answers: a new token for the user, in two names, and its lifetime."""
    expires_in = current_app.config["TOKEN_MAX_AGE"]
    token = issue_token(user, expires_in)
    return {"token": token, "access_token": token, "token_type": "Bearer", "expires_in": expires_in}


def credentials(body: Credentials) -> tuple[str, str]:
    """Username and password from the body, else from HTTP Basic.

    :raise 400: either is missing, or the username holds a NUL character.
    """
    auth = request.authorization
    basic = auth if auth is not None and auth.type == "basic" else None
    given = {
        "username": body.username or (basic.username if basic else None),
        "password": body.password or (basic.password if basic else None),
    }
    problems = {name: ["required"] for name, value in given.items() if not value}
    if "\x00" in str(given["username"]):  # as the body's is checked, for HTTP Basic's
        problems["username"] = ["may not contain NUL characters"]
    if problems:
        errors.invalid(problems)
    return str(given["username"]), str(given["password"])


@bp.post("/get-token/")
@bp.input(Credentials, location="json_or_form")
@bp.output(TokenOut)
@bp.doc(
    responses={
        400: "Missing username or password",
        401: "Wrong credentials",
        429: "Too many failed logins for this username, or from this address",
    }
)
def get_token(json_or_form_data: Credentials) -> dict[str, Any]:
    """Get an access token for a username and password (form, JSON or HTTP Basic)."""
    return token_answer(log_in(*credentials(json_or_form_data)))
