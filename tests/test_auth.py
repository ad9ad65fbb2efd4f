"""Access tokens, the `/get-token/` endpoint and the login throttle."""

import base64
import re
import statistics
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import PASSWORD, bearer
from itsdangerous import URLSafeSerializer

from sit import clock
from sit.auth import THROTTLE_LIMIT, TOKEN_SALT, issue_token
from sit.cli import create_user
from sit.extensions import db
from sit.models import LoginFailure

# What anyone may call without a token; every other route needs one.
OPEN = {
    "auth.get_token",
    "health.health",
    "metrics.metrics",  # its own credentials, when METRICS_TOKEN is set (test_metrics.py)
    "unsubscribe.show_unsubscribe",
    "unsubscribe.unsubscribe",
    "openapi.spec",
    "openapi.docs",
    "openapi.swagger_ui_oauth_redirect",
    "docs_assets.static",
}


def basic(username, password):
    return {
        "Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    }


def move_clock(monkeypatch, delta):
    later = clock.utcnow() + delta
    monkeypatch.setattr(clock, "utcnow", lambda: later)


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.post("/get-token/", data={"username": "alice", "password": PASSWORD}),
        lambda c: c.post("/get-token/", json={"username": "alice", "password": PASSWORD}),
        lambda c: c.post("/get-token/", headers=basic("alice", PASSWORD)),
    ],
    ids=["form", "json", "basic"],
)
def test_get_token_takes_form_json_or_basic(client, app, alice, send):
    response = send(client)
    assert response.status_code == 200
    body = response.json
    assert body["token"] == body["access_token"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.config["TOKEN_MAX_AGE"] == 7 * 86400
    me = client.get("/api/users/me/", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json["username"] == "alice"


def test_original_token_scheme_works(client, alice):
    token = client.post("/get-token/", data={"username": "alice", "password": PASSWORD}).json
    response = client.get("/api/", headers={"Authorization": f"Token {token['token']}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "credentials",
    [{"username": "alice", "password": "wrong"}, {"username": "nobody", "password": PASSWORD}],
)
def test_wrong_credentials_are_401(client, alice, credentials):
    response = client.post("/get-token/", data=credentials)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert "WWW-Authenticate" in response.headers
    assert "token" not in response.json


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({}, {"username", "password"}),
        ({"username": "alice"}, {"password"}),
        ({"password": "x"}, {"username"}),
        ({"username": "", "password": ""}, {"username", "password"}),
    ],
)
def test_missing_credentials_are_400_naming_them(client, alice, body, missing):
    response = client.post("/get-token/", json=body)
    assert response.status_code == 400
    assert set(response.json["errors"]) == missing


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.post("/get-token/", json={"username": "alice\x00", "password": PASSWORD}),
        lambda c: c.post("/get-token/", headers=basic("alice\x00", PASSWORD)),
    ],
    ids=["body", "basic"],
)
def test_a_username_with_a_nul_character_is_400(client, alice, send):
    response = send(client)
    assert response.status_code == 400
    assert "NUL" in response.json["errors"]["username"][0]


def test_every_endpoint_needs_a_token(app, client):
    """Every route of the app, as it is registered: one added tomorrow is covered too."""
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in OPEN or rule.endpoint.startswith("web."):  # pages: test_web.py
            continue
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(path, method=method)
            assert response.status_code == 401, (method, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.mimetype == "application/problem+json"
            checked += 1
    assert checked >= 25


def tampered(token):
    payload, signature = token.split(".")
    return f"{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (lambda user: "Bearer", "Send an access token"),
        (lambda user: "Bearer not-a-token", "malformed"),
        (lambda user: "Basic YWxpY2U6eA==", "Send an access token"),
        (lambda user: f"Bearer {tampered(issue_token(user, 60))}", "malformed"),
        (
            lambda user: (
                "Bearer "
                + URLSafeSerializer("other-key", salt=TOKEN_SALT).dumps(
                    {"sub": user.id, "gen": user.token_generation, "exp": 2**40}
                )
            ),
            "malformed",
        ),
        (
            lambda user: "Bearer " + URLSafeSerializer("test", salt=TOKEN_SALT).dumps([1]),
            "malformed",
        ),
        (lambda user: f"Bearer {issue_token(user, 0)}", "expired"),
    ],
    ids=[
        "no-token",
        "garbage",
        "wrong-scheme",
        "tampered",
        "other-secret-key",
        "not-claims",
        "expired",
    ],
)
def test_bad_tokens_are_401_saying_why(client, app, alice, header, reason):
    app.config["SECRET_KEY"] = "test"
    response = client.get("/api/", headers={"Authorization": header(alice)})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="SIT"'
    assert reason in response.json["detail"]


def test_token_expires_when_its_time_comes(client, alice, monkeypatch):
    headers = bearer(alice, expires_in=60)
    assert client.get("/api/", headers=headers).status_code == 200
    move_clock(monkeypatch, timedelta(seconds=61))
    response = client.get("/api/", headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json["detail"]


@pytest.mark.parametrize(
    "revoke", [lambda user: user.revoke_tokens(), lambda user: user.set_password("a new password")]
)
def test_revoking_or_a_new_password_invalidates_earlier_tokens(client, alice, revoke):
    old = bearer(alice)
    revoke(alice)
    db.session.commit()
    response = client.get("/api/", headers=old)
    assert response.status_code == 401
    assert "revoked" in response.json["detail"]
    assert client.get("/api/", headers=bearer(alice)).status_code == 200


def fail_logins(client, username, times):
    for _ in range(times):
        assert (
            client.post("/get-token/", data={"username": username, "password": "no"}).status_code
            == 401
        )


def test_throttle_after_ten_failures_even_with_the_right_password(client, alice, bob):
    fail_logins(client, "alice", THROTTLE_LIMIT)
    response = client.post("/get-token/", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert 295 <= int(response.headers["Retry-After"]) <= 300
    assert (
        client.post("/get-token/", data={"username": "bob", "password": PASSWORD}).status_code
        == 200
    )


def test_throttle_frees_when_the_window_passes(client, alice, monkeypatch):
    fail_logins(client, "alice", THROTTLE_LIMIT)
    move_clock(monkeypatch, timedelta(seconds=200))
    response = client.post("/get-token/", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert 95 <= int(response.headers["Retry-After"]) <= 100
    move_clock(monkeypatch, timedelta(seconds=101))
    assert (
        client.post("/get-token/", data={"username": "alice", "password": PASSWORD}).status_code
        == 200
    )


def test_nine_failures_then_success_clears_the_count(client, alice):
    fail_logins(client, "alice", THROTTLE_LIMIT - 1)
    assert (
        client.post("/get-token/", data={"username": "alice", "password": PASSWORD}).status_code
        == 200
    )
    fail_logins(client, "alice", THROTTLE_LIMIT - 1)
    assert (
        client.post("/get-token/", data={"username": "alice", "password": PASSWORD}).status_code
        == 200
    )


def test_unknown_usernames_are_throttled_too_and_old_failures_are_pruned(client, monkeypatch):
    fail_logins(client, "ghost", THROTTLE_LIMIT)
    assert (
        client.post("/get-token/", data={"username": "ghost", "password": "x"}).status_code == 429
    )
    move_clock(monkeypatch, timedelta(minutes=6))
    fail_logins(client, "someone", 1)
    remaining = db.session.scalars(sa.select(LoginFailure.username)).all()
    assert remaining == ["someone"]


def test_overlong_username_is_400(client):
    response = client.post("/get-token/", json={"username": "u" * 151, "password": "x"})
    assert response.status_code == 400
    assert "username" in response.json["errors"]


def login_seconds(client, username, password="wrong password"):
    start = time.perf_counter()
    response = client.post("/get-token/", json={"username": username, "password": password})
    assert response.status_code == 401
    return time.perf_counter() - start


def test_login_time_does_not_reveal_whether_a_username_exists(client, app):
    known = [create_user(f"known{n}", f"k{n}@example.com", PASSWORD).username for n in range(4)]
    existing, unknown = [], []
    for attempt in range(20):  # interleaved, under the throttle's limit for each username
        existing.append(login_seconds(client, known[attempt % 4]))
        unknown.append(login_seconds(client, f"nobody{attempt}"))
    ratio = statistics.median(unknown) / statistics.median(existing)
    assert 0.67 < ratio < 1.5, (statistics.median(unknown), statistics.median(existing))


def test_a_token_signed_with_another_secret_key_is_refused(client, app, alice):
    app.config["SECRET_KEY"] = "the key of another installation"
    token = issue_token(alice, 3600)
    app.config["SECRET_KEY"] = "this installation's key"
    response = client.get("/api/", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "malformed" in response.json["detail"]
    app.config["SECRET_KEY"] = "the key of another installation"
    assert client.get("/api/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
