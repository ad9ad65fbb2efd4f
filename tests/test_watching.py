"""Who watches an issue and why; `GET`, `PUT`, `DELETE /api/<id>/subscription`."""

import pytest
from helpers import bearer
from helpers import comment_on as post

from sit import watching
from sit.cli import create_user
from sit.extensions import db
from sit.models import Issue


def subscription(client, headers, issue, method="GET"):
    response = client.open(f"/api/{issue}/subscription", method=method, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def watchers(issue):
    db.session.expire_all()
    return watching.watchers(db.session.get(Issue, issue))


def test_the_creator_and_the_assignee_watch_a_new_issue(client, as_alice, as_bob, new_issue):
    issue = new_issue()["id"]
    assert subscription(client, as_alice, issue) == {
        "subscribed": True,
        "ignored": False,
        "reason": "creator",
    }
    assert subscription(client, as_bob, issue)["reason"] == "assignee"


def test_whoever_comments_watches(client, new_issue, alice, carol):
    issue = new_issue()["id"]
    assert subscription(client, bearer(carol), issue)["subscribed"] is False
    post(issue, carol, "me too")
    assert subscription(client, bearer(carol), issue)["reason"] == "commented"
    assert carol.id in watchers(issue)


@pytest.mark.parametrize(("choice", "reason"), [("PUT", "commented"), ("DELETE", None)])
def test_only_ones_own_comments_and_choice_count(
    client, as_alice, new_issue, bob, carol, choice, reason
):
    issue = new_issue()["id"]  # alice's, assigned to bob
    post(issue, bob, "On it")
    subscription(client, as_alice, issue, "DELETE")
    as_carol = bearer(carol)
    nothing = {"subscribed": False, "ignored": False, "reason": None}
    assert subscription(client, as_carol, issue) == nothing  # neither bob's comment nor alice's
    post(issue, carol, "Me too")
    subscription(client, as_carol, issue, choice)
    assert subscription(client, as_carol, issue)["reason"] == reason


def test_put_subscribes_and_delete_ignores_beating_every_reason(
    client, as_alice, new_issue, alice, bob, carol
):
    issue = new_issue()["id"]
    as_carol = bearer(carol)
    assert subscription(client, as_carol, issue) == {
        "subscribed": False,
        "ignored": False,
        "reason": None,
    }
    put = subscription(client, as_carol, issue, "PUT")
    assert put == {"subscribed": True, "ignored": False, "reason": "manual"}
    assert subscription(client, as_carol, issue) == put
    assert watchers(issue) == {alice.id, bob.id, carol.id}
    ignored = {"subscribed": False, "ignored": True, "reason": None}
    assert subscription(client, as_alice, issue, "DELETE") == ignored  # the creator
    assert subscription(client, as_alice, issue, "DELETE") == ignored  # again: the same
    assert watchers(issue) == {bob.id, carol.id}
    assert subscription(client, as_alice, issue, "PUT")["reason"] == "creator"
    assert watchers(issue) == {alice.id, bob.id, carol.id}


def test_a_change_of_assignee_changes_who_watches(client, as_alice, new_issue, alice, carol):
    issue = new_issue()["id"]
    client.patch(f"/api/{issue}/", json={"assigned_to": carol.id}, headers=as_alice)
    assert watchers(issue) == {alice.id, carol.id}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_no_such_issue_is_404_problem_json(client, as_alice, method):
    response = client.open("/api/999/subscription", method=method, headers=as_alice)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


def test_a_subscription_goes_with_its_issue(client, as_alice, new_issue, app):
    dave = create_user("dave", "dave@example.com", "pw")
    issue = new_issue()["id"]
    watching.choose(issue, dave.id, ignored=False)
    db.session.commit()
    assert client.delete(f"/api/{issue}/", headers=as_alice).status_code == 204
    assert watching.choices(issue) == {}
