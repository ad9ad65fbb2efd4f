"""Comments: who writes, edits and deletes them, their shape and paging, and what they change
of their issue."""

import pytest
import sqlalchemy as sa
from helpers import bearer, ids, link_map

from sit.extensions import db
from sit.models import Comment


@pytest.fixture
def comment_on(client):
    """Comment on an issue as someone (their headers); the comment's JSON."""

    def comment(issue, headers, body="Which printer?"):
        response = client.post(
            f"/api/{issue['id']}/comments/", json={"body": body}, headers=headers
        )
        assert response.status_code == 201, response.json
        return response.json

    return comment


def test_create_answers_201_with_the_comment_its_location_and_etag(client, as_bob, bob, new_issue):
    issue = new_issue()
    response = client.post(f"/api/{issue['id']}/comments", json={"body": "Which?"}, headers=as_bob)
    assert response.status_code == 201
    comment = response.json
    assert list(comment) == ["id", "issue", "author", "body", "created_at", "updated_at", "url"]
    assert comment["issue"] == issue["id"] and comment["body"] == "Which?"
    assert comment["author"] == {
        "id": bob.id,
        "username": "bob",
        "first_name": "Bob",
        "last_name": "Builder",
    }
    assert comment["url"] == f"http://sit.test/api/{issue['id']}/comments/{comment['id']}/"
    assert response.headers["Location"] == comment["url"]
    assert response.headers["ETag"]
    assert client.get(comment["url"], headers=as_bob).json == comment


def test_a_form_body_is_taken_too(client, as_bob, new_issue):
    issue = new_issue()
    response = client.post(f"/api/{issue['id']}/comments/", data={"body": "Hi"}, headers=as_bob)
    assert response.status_code == 201 and response.json["body"] == "Hi"


def test_a_comment_counts_and_moves_its_issues_updated_at_and_etag(
    client, as_alice, as_bob, new_issue, comment_on, clock
):
    issue = new_issue()
    before = client.get(f"/api/{issue['id']}/", headers=as_alice)
    clock.advance(60)
    comment_on(issue, as_bob)
    after = client.get(f"/api/{issue['id']}/", headers=as_alice)
    assert (before.json["comments"], after.json["comments"]) == (0, 1)
    assert after.json["updated_at"] > before.json["updated_at"]
    assert after.headers["ETag"] != before.headers["ETag"]
    listed = client.get("/api/", headers=as_alice).json
    assert [(item["id"], item["comments"]) for item in listed] == [(issue["id"], 1)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Field required"),
        ({"body": ""}, "at least 1 character"),
        ({"body": "   \n "}, "may not be blank"),
        ({"body": "x" * 65_537}, "at most 65536 characters"),
        ({"body": "nul\x00"}, "NUL"),
        ({"body": 5}, "valid string"),
        ({"body": "ok", "title": "x"}, "unknown field"),
    ],
)
def test_a_bad_body_is_400_naming_the_field_and_writes_nothing(
    client, as_bob, new_issue, body, message
):
    issue = new_issue()
    response = client.post(f"/api/{issue['id']}/comments/", json=body, headers=as_bob)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert any(message in text for texts in response.json["errors"].values() for text in texts)
    assert client.get(f"/api/{issue['id']}/", headers=as_bob).json["comments"] == 0


def test_65536_characters_fit(client, as_bob, new_issue, comment_on):
    assert len(comment_on(new_issue(), as_bob, "é" * 65_536)["body"]) == 65_536


def test_comments_are_listed_oldest_first_and_paged_with_cursors(
    client, as_alice, as_bob, new_issue, comment_on
):
    issue, other = new_issue(), new_issue()
    made = [comment_on(issue, as_bob if n % 2 else as_alice, f"#{n}")["id"] for n in range(5)]
    comment_on(other, as_bob)
    path = f"/api/{issue['id']}/comments/"
    assert ids(client.get(path, headers=as_bob)) == made
    first = client.get(f"{path}?per_page=2", headers=as_bob)
    assert ids(first) == made[:2] and first.headers["X-Total-Count"] == "5"
    second = client.get(link_map(first)["next"], headers=as_bob)
    assert ids(second) == made[2:4]
    assert ids(client.get(link_map(second)["prev"], headers=as_bob)) == made[:2]
    assert ids(client.get(link_map(first)["last"], headers=as_bob)) == made[4:]


def test_an_issue_without_comments_lists_none(client, as_bob, new_issue):
    response = client.get(f"/api/{new_issue()['id']}/comments/", headers=as_bob)
    assert response.json == [] and response.headers["X-Total-Count"] == "0"


def test_a_missing_issue_or_a_comment_of_another_issue_is_404(
    client, as_bob, new_issue, comment_on
):
    issue, other = new_issue(), new_issue()
    comment = comment_on(issue, as_bob)
    wrong = f"/api/{other['id']}/comments/{comment['id']}/"
    for method in ("GET", "PATCH", "DELETE"):
        response = client.open(wrong, method=method, json={"body": "x"}, headers=as_bob)
        assert response.status_code == 404, method
        assert response.mimetype == "application/problem+json"
    assert client.get("/api/999/comments/", headers=as_bob).status_code == 404
    assert client.get("/api/999/comments/1/", headers=as_bob).status_code == 404
    missing = client.post("/api/999/comments/", json={"body": "x"}, headers=as_bob)
    assert missing.status_code == 404
    assert client.get(f"/api/{issue['id']}/comments/2147483648/", headers=as_bob).status_code == 404


def test_only_the_author_edits_a_comment(client, as_alice, as_bob, as_root, new_issue, comment_on):
    comment = comment_on(new_issue(), as_bob)
    for someone in (as_alice, as_root):  # the issue's creator, an admin
        response = client.patch(comment["url"], json={"body": "Mine now"}, headers=someone)
        assert response.status_code == 403
        assert "its author" in response.json["detail"]
    edited = client.patch(comment["url"], json={"body": "The one on floor 2"}, headers=as_bob)
    assert edited.status_code == 200 and edited.json["body"] == "The one on floor 2"
    assert client.get(comment["url"], headers=as_alice).json["body"] == "The one on floor 2"


def test_an_edit_moves_the_comments_updated_at_and_etag_not_the_issues(
    client, as_bob, new_issue, comment_on, clock
):
    issue = new_issue()
    comment = comment_on(issue, as_bob)
    read = client.get(comment["url"], headers=as_bob)
    issue_etag = client.get(issue["url"], headers=as_bob).headers["ETag"]
    clock.advance(60)
    edited = client.patch(comment["url"], data={"body": "Edited"}, headers=as_bob)
    assert edited.json["updated_at"] > comment["updated_at"] == edited.json["created_at"]
    assert edited.headers["ETag"] != read.headers["ETag"]
    assert client.get(issue["url"], headers=as_bob).headers["ETag"] == issue_etag
    again = client.get(comment["url"], headers=as_bob | {"If-None-Match": read.headers["ETag"]})
    assert again.status_code == 200
    current = {"If-None-Match": edited.headers["ETag"]}
    assert client.get(comment["url"], headers=as_bob | current).status_code == 304


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_a_stale_if_match_is_412_and_changes_nothing(client, as_bob, new_issue, comment_on, method):
    comment = comment_on(new_issue(), as_bob)
    etag = client.get(comment["url"], headers=as_bob).headers["ETag"]
    client.patch(comment["url"], json={"body": "Edited"}, headers=as_bob)
    stale = as_bob | {"If-Match": etag}
    response = client.open(comment["url"], method=method, json={"body": "Lost"}, headers=stale)
    assert response.status_code == 412
    assert client.get(comment["url"], headers=as_bob).json["body"] == "Edited"
    current = as_bob | {"If-Match": client.get(comment["url"], headers=as_bob).headers["ETag"]}
    response = client.open(comment["url"], method=method, json={"body": "Kept"}, headers=current)
    assert response.status_code in (200, 204)


@pytest.mark.parametrize("deleter", ["as_bob", "as_alice", "as_root"])
def test_the_author_the_issues_creator_or_an_admin_deletes_a_comment(
    request, client, as_bob, new_issue, comment_on, deleter
):
    issue = new_issue()  # alice's
    comment = comment_on(issue, as_bob)
    response = client.delete(comment["url"], headers=request.getfixturevalue(deleter))
    assert response.status_code == 204
    assert client.get(comment["url"], headers=as_bob).status_code == 404
    assert client.get(issue["url"], headers=as_bob).json["comments"] == 0


def test_nobody_else_deletes_a_comment(client, as_alice, carol, new_issue, comment_on):
    comment = comment_on(new_issue(), as_alice)
    response = client.delete(comment["url"], headers=bearer(carol))
    assert response.status_code == 403
    assert "its author, the issue's creator or an admin" in response.json["detail"]
    assert client.get(comment["url"], headers=as_alice).status_code == 200


def test_deleting_the_issue_deletes_its_comments(app, client, as_alice, new_issue, comment_on):
    issue, kept = new_issue(), new_issue()
    comment_on(issue, as_alice)
    survivor = comment_on(kept, as_alice)
    assert client.delete(issue["url"], headers=as_alice).status_code == 204
    assert list(db.session.scalars(sa.select(Comment.id))) == [survivor["id"]]
