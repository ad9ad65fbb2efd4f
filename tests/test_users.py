"""People: who can be assigned, your own account and password, and admins managing users."""

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
import sqlalchemy as sa
from helpers import PASSWORD, bearer, wait_until, waiting_on
from sqlalchemy.pool import NullPool

from sit.accounts import create_user
from sit.auth import THROTTLE_LIMIT
from sit.extensions import db
from sit.models import LoginFailure, User

PUBLIC = {"id", "username", "first_name", "last_name"}
ACCOUNT = PUBLIC | {"email", "is_admin", "active", "notify_assignments"}
ACCOUNT |= {"notify_digest", "notify_comments"}


def reload(user):
    db.session.expire_all()
    return db.session.get(User, user.id)


# reading users


def test_list_users_without_emails(client, as_alice, bob):
    response = client.get("/api/users/", headers=as_alice)
    assert response.status_code == 200
    assert [user["username"] for user in response.json] == ["alice", "bob"]
    assert all(set(user) == PUBLIC for user in response.json)
    assert response.headers["X-Total-Count"] == "2"


def test_list_users_pages(client, as_alice, bob):
    response = client.get("/api/users/?per_page=1&page=2", headers=as_alice)
    assert [user["username"] for user in response.json] == ["bob"]
    assert 'rel="prev"' in response.headers["Link"]


def test_get_one_user(client, as_alice, bob):
    response = client.get(f"/api/users/{bob.id}", headers=as_alice)
    assert response.json == {
        "id": bob.id,
        "username": "bob",
        "first_name": "Bob",
        "last_name": "Builder",
    }


def test_an_admin_sees_every_users_account(client, as_root, bob):
    response = client.get(f"/api/users/{bob.id}", headers=as_root)
    assert set(response.json) == ACCOUNT
    assert response.json["email"] == "bob@example.com"


@pytest.mark.parametrize("pk", ["999", "0", "99999999999999999999999"])
def test_missing_user_is_404(client, as_alice, pk):
    response = client.get(f"/api/users/{pk}/", headers=as_alice)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_me_includes_my_account(client, as_alice, alice):
    response = client.get("/api/users/me/", headers=as_alice)
    assert response.json == {
        "id": alice.id,
        "username": "alice",
        "first_name": "Alice",
        "last_name": "Liddell",
        "email": "alice@example.com",
        "is_admin": False,
        "active": True,
        "notify_assignments": True,
        "notify_digest": True,
        "notify_comments": True,
    }
    assert set(client.get(f"/api/users/{alice.id}/", headers=as_alice).json) == ACCOUNT


def test_bad_paging_is_400(client, as_alice):
    response = client.get("/api/users/?per_page=1000", headers=as_alice)
    assert response.status_code == 400
    assert "per_page" in response.json["errors"]


# PATCH /api/users/me/


def test_patch_me_changes_the_given_fields_only(client, as_alice, alice):
    body = {"first_name": "Al", "email": "al@example.org", "notify_digest": False}
    body |= {"notify_comments": False}
    response = client.patch("/api/users/me/", json=body, headers=as_alice)
    assert response.status_code == 200, response.json
    assert response.json | body == response.json
    assert (response.json["last_name"], response.json["notify_assignments"]) == ("Liddell", True)
    alice = reload(alice)
    assert (alice.first_name, alice.email, alice.notify_digest) == ("Al", "al@example.org", False)
    assert alice.notify_comments is False


def test_patch_me_takes_a_form(client, as_alice, alice):
    data = {"notify_assignments": "false", "notify_digest": "true", "last_name": "L."}
    response = client.patch("/api/users/me/", data=data, headers=as_alice)
    assert response.status_code == 200, response.json
    alice = reload(alice)
    assert (alice.notify_assignments, alice.notify_digest, alice.last_name) == (False, True, "L.")
    for bad in ("0", "on", "True", "maybe"):
        response = client.patch("/api/users/me/", data={"notify_digest": bad}, headers=as_alice)
        assert "must be true or false" in response.json["errors"]["notify_digest"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a b@example.com"}, "email"),
        ({"email": "x@" + "e" * 260}, "email"),
        ({"is_admin": True}, "is_admin"),
        ({"active": False}, "active"),
        ({"username": "mallory"}, "username"),
        ({"password": "whatever1"}, "password"),
        ({"first_name": None}, "first_name"),
        ({"first_name": "x" * 151}, "first_name"),
        ({"notify_digest": "maybe"}, "notify_digest"),
        ({"notify_digest": 0}, "notify_digest"),
        ({"notify_digest": "false"}, "notify_digest"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_patch_me_refuses_what_is_not_yours_to_change(client, as_alice, alice, body, field):
    response = client.patch("/api/users/me/", json=body, headers=as_alice)
    assert response.status_code == 400
    assert list(response.json["errors"]) == [field]
    alice = reload(alice)
    assert (alice.email, alice.is_admin, alice.username) == ("alice@example.com", False, "alice")


# POST /api/users/me/password


def change_password(client, headers, current, new="a brand new password"):
    body = {"current_password": current, "new_password": new}
    return client.post("/api/users/me/password", json=body, headers=headers)


def test_a_new_password_answers_a_token_and_revokes_the_others(client, alice, as_alice):
    response = change_password(client, as_alice, PASSWORD)
    assert response.status_code == 200, response.json
    assert set(response.json) == {"token", "access_token", "token_type", "expires_in"}
    fresh = {"Authorization": f"Bearer {response.json['token']}"}
    assert client.get("/api/users/me/", headers=fresh).status_code == 200
    old = client.get("/api/users/me/", headers=as_alice)
    assert old.status_code == 401 and "revoked" in old.json["detail"]
    login = {"username": "alice", "password": "a brand new password"}
    assert client.post("/get-token/", data=login).status_code == 200


@pytest.mark.parametrize(
    ("current", "new", "field"),
    [("wrong", "a brand new password", "current_password"), (PASSWORD, "short", "new_password")],
)
def test_a_wrong_current_or_a_short_new_password_is_400(
    client, alice, as_alice, current, new, field
):
    response = change_password(client, as_alice, current, new)
    assert response.status_code == 400
    assert list(response.json["errors"]) == [field]
    assert client.get("/api/users/me/", headers=as_alice).status_code == 200
    assert reload(alice).check_password(PASSWORD)


def test_wrong_current_passwords_count_as_failed_logins(client, alice, as_alice):
    """Else a stolen token could guess the password without the login throttle."""
    for _ in range(THROTTLE_LIMIT):
        assert change_password(client, as_alice, "guess").status_code == 400
    response = change_password(client, as_alice, PASSWORD)
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    login = client.post("/get-token/", data={"username": "alice", "password": PASSWORD})
    assert login.status_code == 429
    assert reload(alice).check_password(PASSWORD)


def test_the_right_current_password_clears_the_failed_logins(client, alice, as_alice):
    change_password(client, as_alice, "guess")
    assert change_password(client, as_alice, PASSWORD).status_code == 200
    assert db.session.scalar(sa.select(sa.func.count()).select_from(LoginFailure)) == 0


# POST /api/users/ (admins)


def test_an_admin_creates_a_user_with_a_made_up_password_shown_once(client, as_root):
    body = {"username": "dave", "email": "dave@example.com", "first_name": "Dave"}
    response = client.post("/api/users/", json=body, headers=as_root)
    assert response.status_code == 201, response.json
    dave = db.session.scalar(sa.select(User).where(User.username == "dave"))
    assert response.headers["Location"] == f"http://sit.test/api/users/{dave.id}/"
    assert set(response.json) == ACCOUNT | {"password"}
    assert (response.json["is_admin"], response.json["last_name"]) == (False, "")
    password = response.json["password"]
    assert len(password) >= 16
    login = {"username": "dave", "password": password}
    assert client.post("/get-token/", data=login).status_code == 200
    shown = client.get(f"/api/users/{dave.id}/", headers=as_root).json
    assert "password" not in shown


def test_an_admin_creates_an_admin_with_a_given_password(client, as_root):
    body = {"username": "eve", "email": "eve@example.com", "password": "eves own password"}
    response = client.post("/api/users/", data=body | {"is_admin": "true"}, headers=as_root)
    assert response.status_code == 201, response.json
    assert (response.json["password"], response.json["is_admin"]) == (None, True)
    login = {"username": "eve", "password": "eves own password"}
    assert client.post("/get-token/", data=login).status_code == 200


def test_a_taken_username_is_409(client, as_root, alice):
    body = {"username": "alice", "email": "other@example.com"}
    response = client.post("/api/users/", json=body, headers=as_root)
    assert response.status_code == 409
    assert "taken" in response.json["detail"]
    assert reload(alice).email == "alice@example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "a b", "email": "ab@example.com"}, "username"),
        ({"username": "", "email": "ab@example.com"}, "username"),
        ({"username": "ab", "email": "ab"}, "email"),
        ({"username": "ab", "email": "ab@example.com", "password": "short"}, "password"),
        ({"username": "ab", "email": "ab@example.com", "active": False}, "active"),
        ({"email": "ab@example.com"}, "username"),
    ],
)
def test_a_bad_new_user_is_400_naming_the_field(client, as_root, body, field):
    response = client.post("/api/users/", json=body, headers=as_root)
    assert response.status_code == 400
    assert list(response.json["errors"]) == [field]


# PATCH /api/users/<id>/ (admins)


def test_an_admin_changes_a_user(client, as_root, bob):
    body = {"last_name": "B.", "email": "b@example.org", "is_admin": True, "notify_digest": False}
    body |= {"notify_comments": False}
    response = client.patch(f"/api/users/{bob.id}/", json=body, headers=as_root)
    assert response.status_code == 200, response.json
    assert response.json | body == response.json
    bob = reload(bob)
    assert (bob.last_name, bob.email, bob.is_admin, bob.notify_digest) == (
        "B.",
        "b@example.org",
        True,
        False,
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/users/", {"username": "dave", "email": "dave@example.com"}),
        ("patch", "/api/users/{bob}/", {"first_name": "Robert"}),
        ("patch", "/api/users/{alice}/", {"is_admin": True}),
        ("patch", "/api/users/999/", {"first_name": "Nobody"}),
    ],
    ids=["create", "change-another", "promote-self", "change-missing"],
)
def test_non_admins_get_403(client, alice, as_alice, bob, method, path, body):
    url = path.format(alice=alice.id, bob=bob.id)
    response = getattr(client, method)(url, json=body, headers=as_alice)
    assert response.status_code == 403
    assert "admins" in response.json["detail"]
    assert usernames() == {"alice", "bob"}
    assert (reload(bob).first_name, reload(alice).is_admin) == ("Bob", False)


def usernames():
    return set(db.session.scalars(sa.select(User.username)))


@pytest.mark.parametrize("body", [{"is_admin": False}, {"active": False}])
def test_the_last_active_admin_cannot_demote_or_deactivate_themselves(
    client, root, as_root, alice, body
):
    response = client.patch(f"/api/users/{root.id}/", json=body, headers=as_root)
    assert response.status_code == 409
    assert "last active admin" in response.json["detail"]
    root = reload(root)
    assert (root.is_admin, root.active) == (True, True)


def test_an_admin_steps_down_once_another_admin_is_active(client, root, as_root, alice, bob):
    client.patch(f"/api/users/{alice.id}/", json={"is_admin": True}, headers=as_root)
    client.patch(f"/api/users/{bob.id}/", json={"is_admin": True, "active": False}, headers=as_root)
    inactive_admin_left = client.patch(
        f"/api/users/{alice.id}/", json={"active": False}, headers=as_root
    )
    assert inactive_admin_left.status_code == 200
    assert (
        client.patch(
            f"/api/users/{root.id}/", json={"is_admin": False}, headers=as_root
        ).status_code
        == 409
    )
    client.patch(f"/api/users/{alice.id}/", json={"active": True}, headers=as_root)
    response = client.patch(f"/api/users/{root.id}/", json={"is_admin": False}, headers=as_root)
    assert response.status_code == 200
    assert response.json["is_admin"] is False
    assert (
        client.post(
            "/api/users/", json={"username": "x", "email": "x@x.x"}, headers=as_root
        ).status_code
        == 403
    )


# deactivated users


@pytest.fixture
def deactivated_bob(client, as_root, bob, as_bob):
    """Bob, deactivated by an admin after he got a token (`as_bob`)."""
    response = client.patch(f"/api/users/{bob.id}/", json={"active": False}, headers=as_root)
    assert response.status_code == 200
    assert response.json["active"] is False
    return bob


def test_a_deactivated_users_token_is_refused_at_once(client, deactivated_bob, as_bob):
    response = client.get("/api/users/me/", headers=as_bob)
    assert response.status_code == 401
    assert "deactivated" in response.json["detail"]


def test_a_deactivated_user_cannot_get_a_token(client, deactivated_bob):
    right = client.post("/get-token/", data={"username": "bob", "password": PASSWORD})
    assert right.status_code == 401
    assert "deactivated" in right.json["detail"]
    wrong = client.post("/get-token/", data={"username": "bob", "password": "guess"})
    assert wrong.status_code == 401
    assert wrong.json["detail"] == "Wrong username or password."
    failures = sa.select(sa.func.count()).where(LoginFailure.username == "bob")
    assert db.session.scalar(failures) == 2  # the right password counted too


def test_a_deactivated_user_is_not_listed_but_still_shown(client, deactivated_bob, as_alice):
    listed = client.get("/api/users/", headers=as_alice).json
    assert [user["username"] for user in listed] == ["root", "alice"]
    shown = client.get(f"/api/users/{deactivated_bob.id}/", headers=as_alice)
    assert (shown.status_code, shown.json["username"]) == (200, "bob")


def test_a_deactivated_user_cannot_be_assigned_but_keeps_their_issues(
    client, bob, as_alice, new_issue, as_root
):
    held = new_issue(assigned_to=bob.id)
    client.patch(f"/api/users/{bob.id}/", json={"active": False}, headers=as_root)
    for send in (
        lambda: client.post("/api/", json={"title": "t", "assigned_to": bob.id}, headers=as_alice),
        lambda: client.patch(
            f"/api/{new_issue(assigned_to=None)['id']}/",
            json={"assigned_to": bob.id},
            headers=as_alice,
        ),
    ):
        response = send()
        assert response.status_code == 400
        assert "deactivated" in response.json["errors"]["assigned_to"][0]
    kept = client.get(f"/api/{held['id']}/", headers=as_alice).json
    assert kept["assigned_to"] == bob.id
    replaced = {"title": "Renamed", "assigned_to": bob.id}  # a PUT naming the holder again
    response = client.put(f"/api/{held['id']}/", json=replaced, headers=as_alice)
    assert response.status_code == 200, response.json


def test_reactivating_revives_no_old_token(client, deactivated_bob, as_bob, as_root):
    client.patch(f"/api/users/{deactivated_bob.id}/", json={"active": True}, headers=as_root)
    response = client.get("/api/users/me/", headers=as_bob)
    assert response.status_code == 401
    assert "revoked" in response.json["detail"]
    login = client.post("/get-token/", data={"username": "bob", "password": PASSWORD})
    assert login.status_code == 200


@pytest.mark.parametrize("body", ["null", "[]", "false", '"x"', "0"])
def test_a_json_body_that_is_not_an_object_is_400(client, as_alice, alice, body):
    headers = as_alice | {"Content-Type": "application/json"}
    response = client.patch("/api/users/me/", data=body, headers=headers)
    assert response.status_code == 400
    assert response.json["errors"] == {"body": ["must be a JSON object or a form"]}


def test_two_admins_demoting_each_other_at_once_leave_one(postgres_db, instance, app, client):
    """On PostgreSQL, where two requests really run at once: the second waits for the first's
    lock on the active admins, then sees it is the last one."""
    root = create_user("root", "root@example.com", PASSWORD, is_admin=True)
    alice = create_user("alice", "alice@example.com", PASSWORD, is_admin=True)
    as_root = bearer(root)
    other_request = sa.create_engine(postgres_db, poolclass=NullPool)
    try:
        with other_request.connect() as connection, ThreadPoolExecutor(1) as pool:
            # alice's request demoting root, between its lock and its commit
            admins = sa.select(User.id).where(User.is_admin, User.active).with_for_update()
            connection.execute(admins).all()
            connection.execute(sa.update(User).where(User.id == root.id).values(is_admin=False))
            # root's request demoting alice, in a thread: it has to wait
            url, body = f"/api/users/{alice.id}/", {"is_admin": False}
            demote_alice = pool.submit(client.patch, url, json=body, headers=as_root)
            wait_until(partial(waiting_on, connection), 30, "root's request to wait")
            connection.commit()
            response = demote_alice.result(timeout=30)
        assert response.status_code == 409, response.json
        assert [user.username for user in admins_now()] == ["alice"]
    finally:
        other_request.dispose()


def admins_now():
    db.session.rollback()
    return db.session.scalars(sa.select(User).where(User.is_admin, User.active)).all()
