"""Who can be assigned: public user fields for everyone, the email only for oneself."""

import pytest

PUBLIC = {"id", "username", "first_name", "last_name"}


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


@pytest.mark.parametrize("pk", ["999", "0", "99999999999999999999999"])
def test_missing_user_is_404(client, as_alice, pk):
    response = client.get(f"/api/users/{pk}/", headers=as_alice)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_me_includes_my_email(client, as_alice, alice):
    response = client.get("/api/users/me/", headers=as_alice)
    assert response.json == {
        "id": alice.id,
        "username": "alice",
        "first_name": "Alice",
        "last_name": "Liddell",
        "email": "alice@example.com",
    }


def test_bad_paging_is_400(client, as_alice):
    response = client.get("/api/users/?per_page=1000", headers=as_alice)
    assert response.status_code == 400
    assert "per_page" in response.json["errors"]
