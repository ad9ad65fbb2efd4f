"""An issue's history: what each change records, in the change's own transaction, and only
when something changed."""

import pytest
import sqlalchemy as sa
from helpers import ids, link_map, statements

from sit import notifications
from sit.extensions import db
from sit.models import Event, Label


def history(client, issue, headers):
    """The issue's events as (kind, its own fields, actor's username), oldest first."""
    response = client.get(f"/api/{issue['id']}/events/", headers=headers)
    assert response.status_code == 200, response.json
    common = {"id", "event", "actor", "created_at"}
    return [
        (
            event["event"],
            {k: v for k, v in event.items() if k not in common},
            event["actor"]["username"],
        )
        for event in response.json
    ]


def user(someone):
    return {
        "id": someone.id,
        "username": someone.username,
        "first_name": someone.first_name,
        "last_name": someone.last_name,
    }


def test_a_new_issue_records_created_by_its_creator(client, as_bob, new_issue):
    issue = new_issue()
    assert history(client, issue, as_bob) == [("created", {}, "alice")]
    event = client.get(f"/api/{issue['id']}/events/", headers=as_bob).json[0]
    assert list(event) == ["id", "event", "actor", "created_at"]
    assert event["created_at"] == issue["created_at"]


def test_a_create_adds_one_insert(client, as_alice):
    with statements() as seen:
        client.post("/api/", json={"title": "t"}, headers=as_alice)
    inserts = [s for s in seen if s.startswith("INSERT")]
    assert [s.split()[2] for s in inserts] == ["issues", "events"]
    assert not any("labels" in s for s in seen)  # none given, none looked up nor read back


def test_one_patch_records_each_change_in_one_insert(client, as_alice, alice, bob, new_issue):
    issue = new_issue()
    change = {"title": "Printer fixed", "description": "Toner", "assigned_to": alice.id}
    with statements() as seen:
        response = client.patch(issue["url"], json=change | {"status": "closed"}, headers=as_alice)
    assert response.status_code == 200
    assert sum(s.startswith("INSERT INTO events") for s in seen) == 1
    assert history(client, issue, as_alice)[1:] == [
        ("renamed", {"from": "Printer on fire", "to": "Printer fixed"}, "alice"),
        ("edited", {}, "alice"),
        ("assigned", {"from": user(bob), "to": user(alice)}, "alice"),
        ("closed", {}, "alice"),
    ]


def test_unassigning_and_reopening(client, as_alice, bob, new_issue):
    issue = new_issue(status="C")
    client.patch(issue["url"], json={"assigned_to": None, "status": "O"}, headers=as_alice)
    client.patch(issue["url"], json={"assigned_to": bob.id}, headers=as_alice)
    assert history(client, issue, as_alice)[1:] == [
        ("assigned", {"from": user(bob), "to": None}, "alice"),
        ("reopened", {}, "alice"),
        ("assigned", {"from": None, "to": user(bob)}, "alice"),
    ]


@pytest.mark.parametrize(
    "write",
    [
        lambda client, issue, h: client.patch(
            issue["url"], json={"title": issue["title"]}, headers=h
        ),
        lambda client, issue, h: client.patch(issue["url"], json={}, headers=h),
        lambda client, issue, h: client.put(issue["url"], json=issue, headers=h),
        lambda client, issue, h: client.patch(issue["url"], json={"status": "open"}, headers=h),
        lambda client, issue, h: client.patch(issue["url"], json={"labels": ["BUG"]}, headers=h),
    ],
    ids=["same-title", "nothing", "put-as-read", "same-status", "same-labels"],
)
def test_a_write_that_changes_nothing_records_nothing(client, as_alice, as_root, new_issue, write):
    client.post("/api/labels/", json={"name": "bug"}, headers=as_root)
    issue = new_issue(labels=["bug"])
    response = write(client, issue, as_alice)
    assert response.status_code == 200, response.json
    assert response.headers["ETag"] == client.get(issue["url"], headers=as_alice).headers["ETag"]
    assert [kind for kind, _, _ in history(client, issue, as_alice)] == ["created"]
    assert response.json["updated_at"] == issue["updated_at"]


def test_label_changes_record_labeled_and_unlabeled(client, as_alice, as_root, new_issue):
    for name in ("bug", "printer", "urgent"):
        client.post("/api/labels/", json={"name": name}, headers=as_root)
    issue = new_issue(labels=["bug"])
    client.patch(issue["url"], json={"labels": ["Urgent", "printer"]}, headers=as_alice)
    assert history(client, issue, as_alice)[1:] == [
        ("labeled", {"label": "printer"}, "alice"),
        ("labeled", {"label": "urgent"}, "alice"),
        ("unlabeled", {"label": "bug"}, "alice"),
    ]


def test_comments_record_commented_and_comment_deleted(client, as_alice, as_bob, new_issue):
    issue = new_issue()
    comment = client.post(f"/api/{issue['id']}/comments/", json={"body": "Hi"}, headers=as_bob)
    client.patch(comment.json["url"], json={"body": "Hello"}, headers=as_bob)
    client.delete(comment.json["url"], headers=as_alice)
    assert history(client, issue, as_alice)[1:] == [
        ("commented", {"comment": comment.json["id"]}, "bob"),
        ("comment_deleted", {"comment": comment.json["id"]}, "alice"),
    ]


def test_a_change_that_fails_records_nothing(client, as_alice, alice, new_issue, monkeypatch):
    """The events go in the change's own transaction: when it is not committed, nor are they."""
    issue = new_issue()

    def broken(*args):
        raise RuntimeError("the email could not be queued")

    monkeypatch.setattr(notifications, "assignment_email", broken)
    with pytest.raises(RuntimeError):
        client.patch(issue["url"], json={"title": "New", "assigned_to": alice.id}, headers=as_alice)
    db.session.rollback()
    assert [kind for kind, _, _ in history(client, issue, as_alice)] == ["created"]
    assert client.get(issue["url"], headers=as_alice).json["title"] == "Printer on fire"


def test_refused_changes_record_nothing(client, as_alice, as_bob, new_issue):
    issue = new_issue()
    client.patch(issue["url"], json={"title": "Bob's"}, headers=as_bob)  # 403
    client.patch(issue["url"], json={"title": ""}, headers=as_alice)  # 400
    client.patch(issue["url"], json={"title": "x"}, headers=as_alice | {"If-Match": '"old"'})
    client.patch(issue["url"], json={"title": "x", "labels": ["nope"]}, headers=as_alice)
    assert [kind for kind, _, _ in history(client, issue, as_alice)] == ["created"]


def test_history_is_paged_oldest_first(client, as_alice, new_issue):
    issue = new_issue()
    for n in range(4):
        client.patch(issue["url"], json={"title": f"Title {n}"}, headers=as_alice)
    everything = ids(client.get(f"/api/{issue['id']}/events/", headers=as_alice))
    assert everything == sorted(everything) and len(everything) == 5
    first = client.get(f"/api/{issue['id']}/events/?per_page=3", headers=as_alice)
    assert ids(first) == everything[:3] and first.headers["X-Total-Count"] == "5"
    assert ids(client.get(link_map(first)["next"], headers=as_alice)) == everything[3:]


def test_a_missing_issue_has_no_history(client, as_alice):
    response = client.get("/api/999/events/", headers=as_alice)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_deleting_the_issue_deletes_its_history_and_labelling(client, as_alice, as_root, new_issue):
    client.post("/api/labels/", json={"name": "bug"}, headers=as_root)
    issue, kept = new_issue(labels=["bug"]), new_issue(labels=["bug"])
    client.post(f"/api/{issue['id']}/comments/", json={"body": "Hi"}, headers=as_alice)
    assert client.delete(issue["url"], headers=as_alice).status_code == 204
    assert set(db.session.scalars(sa.select(Event.issue_id))) == {kept["id"]}
    labeled = client.get("/api/?label=bug", headers=as_alice)
    assert ids(labeled) == [kept["id"]]
    assert db.session.scalar(sa.select(sa.func.count(Label.id))) == 1
