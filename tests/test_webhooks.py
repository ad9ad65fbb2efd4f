"""The webhooks API (admins only), and the messages a change stores in its own transaction."""

import json
import re

import pytest
import sqlalchemy as sa
from helpers import PASSWORD, bearer, link_map

from sit.cli import create_user
from sit.extensions import db
from sit.models import Webhook, WebhookDelivery, WebhookMessage

LOOPBACK = {"SIT_WEBHOOK_ALLOWED_HOSTS": "loopback"}
PUBLIC = "http://93.184.216.34/hook"  # an IP literal: checked, never resolved nor connected to


@pytest.fixture
def as_admin(app):
    return bearer(create_user("root", "root@example.com", PASSWORD, is_admin=True))


@pytest.fixture
def hook(client, as_admin):
    """Create a webhook to PUBLIC (or as told) and return its JSON, secret included."""

    def create(**fields):
        response = client.post("/api/webhooks/", json={"url": PUBLIC} | fields, headers=as_admin)
        assert response.status_code == 201, response.json
        return response.json

    return create


def messages(**where):
    db.session.rollback()
    query = sa.select(WebhookMessage).filter_by(**where).order_by(WebhookMessage.id)
    return list(db.session.scalars(query))


def test_a_webhook_is_created_with_a_secret_shown_once(client, as_admin, hook):
    created = hook(description="chat")
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", created["secret"])
    assert created["events"] == ["*"] and created["active"] is True
    location = client.get(f"/api/webhooks/{created['id']}/", headers=as_admin)
    assert location.status_code == 200
    assert "secret" not in location.json
    assert location.json == {k: v for k, v in created.items() if k != "secret"}
    listed = client.get("/api/webhooks/", headers=as_admin)
    assert [w["id"] for w in listed.json] == [created["id"]]
    assert "secret" not in listed.json[0]


def test_a_given_secret_is_kept_and_a_malformed_one_is_400(client, as_admin, hook):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert hook(secret=secret)["secret"] == secret
    response = client.post(
        "/api/webhooks/", json={"url": PUBLIC, "secret": "hunter2"}, headers=as_admin
    )
    assert response.status_code == 400
    assert "secret" in response.json["errors"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/"}, "url"),
        ({"url": "http://user:pw@93.184.216.34/"}, "url"),
        ({"url": "https://" + "0" * 1900}, "url"),
        ({"url": "http://a..b/"}, "url"),
        ({"url": PUBLIC, "events": ["issue.renamed"]}, "events"),
        ({"url": PUBLIC, "events": []}, "events"),
        ({"url": PUBLIC, "colour": "red"}, "colour"),
    ],
)
def test_a_bad_webhook_is_400_naming_the_field(client, as_admin, body, field):
    response = client.post("/api/webhooks/", json=body, headers=as_admin)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert field in response.json["errors"]


@pytest.mark.parametrize(
    "send",
    [
        lambda c, h: c.get("/api/webhooks/", headers=h),
        lambda c, h: c.post("/api/webhooks/", json={"url": PUBLIC}, headers=h),
        lambda c, h: c.get("/api/webhooks/1/", headers=h),
        lambda c, h: c.patch("/api/webhooks/1/", json={"active": False}, headers=h),
        lambda c, h: c.delete("/api/webhooks/1/", headers=h),
        lambda c, h: c.post("/api/webhooks/1/ping", headers=h),
        lambda c, h: c.get("/api/webhooks/1/deliveries/", headers=h),
        lambda c, h: c.get("/api/webhooks/1/deliveries/1/", headers=h),
        lambda c, h: c.post("/api/webhooks/1/deliveries/1/redeliver", headers=h),
    ],
)
def test_only_admins_manage_webhooks(client, as_alice, hook, send):
    hook()
    response = send(client, as_alice)
    assert response.status_code == 403
    assert "admins" in response.json["detail"]
    assert send(client, {}).status_code == 401


def test_a_webhook_is_changed_deactivated_and_deleted_with_its_messages(
    client, as_admin, hook, new_issue
):
    created = hook()
    path = f"/api/webhooks/{created['id']}/"
    changed = client.patch(
        path, json={"events": ["issue.deleted"], "active": False}, headers=as_admin
    )
    assert changed.status_code == 200
    assert (changed.json["events"], changed.json["active"]) == (["issue.deleted"], False)
    client.patch(path, json={"active": True, "events": ["*"]}, headers=as_admin)
    new_issue()
    client.patch(path, json={"active": False}, headers=as_admin)
    assert [(m.state, m.last_error) for m in messages()] == [
        ("failed", "the webhook was deactivated")
    ]
    new_issue()
    assert client.delete(path, headers=as_admin).status_code == 204
    assert client.get(path, headers=as_admin).status_code == 404
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Webhook)) == 0


def test_a_change_stores_one_message_per_webhook_that_wants_it(
    client, as_alice, hook, new_issue, alice, bob
):
    everything = hook()["id"]
    deletions = hook(events=["issue.deleted"])["id"]
    hook(active=False)
    issue = new_issue()
    path = f"/api/{issue['id']}/"
    client.patch(path, json={"title": "Printer fixed", "assigned_to": alice.id}, headers=as_alice)
    client.patch(path, json={"title": "Printer fixed"}, headers=as_alice)  # changes nothing
    client.delete(path, headers=as_alice)
    stored = [(m.webhook_id, m.type) for m in messages()]
    assert stored == [
        (everything, "issue.created"),
        (everything, "issue.updated"),
        (everything, "issue.deleted"),
        (deletions, "issue.deleted"),
    ]
    created, updated, deleted, _ = (json.loads(m.body) for m in messages())
    assert created["data"] | {"actor": None} == issue | {"actor": None}
    assert created["data"]["actor"]["username"] == "alice"
    assert updated["data"]["changes"] == {
        "title": {"from": "Printer on fire"},
        "assigned_to": {"from": bob.id},
    }
    assert (updated["data"]["title"], updated["data"]["assigned_to"]) == ("Printer fixed", alice.id)
    assert deleted["data"]["id"] == issue["id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", deleted["timestamp"])
    assert len({m.msg_id for m in messages()}) == 4


def test_a_change_that_fails_stores_no_message(client, as_bob, hook, new_issue):
    hook()
    issue = new_issue()
    response = client.patch(f"/api/{issue['id']}/", json={"title": "mine"}, headers=as_bob)
    assert response.status_code == 403
    assert [m.type for m in messages()] == ["issue.created"]


def test_ping_queues_a_ping_and_an_inactive_webhook_is_409(client, as_admin, hook):
    created = hook()
    response = client.post(f"/api/webhooks/{created['id']}/ping", headers=as_admin)
    assert response.status_code == 202
    (message,) = messages()
    assert response.json == {"message_id": message.msg_id, "type": "ping", "state": "pending"}
    assert json.loads(message.body)["data"]["webhook"]["id"] == created["id"]
    client.patch(f"/api/webhooks/{created['id']}/", json={"active": False}, headers=as_admin)
    assert client.post(f"/api/webhooks/{created['id']}/ping", headers=as_admin).status_code == 409


def log_attempts(webhook_id, count):
    """`count` failed attempts of one ping message, logged as the sender logs them."""
    message = WebhookMessage(webhook_id=webhook_id, msg_id="msg_x", type="ping", body="{}")
    message.state = "failed"
    db.session.add(message)
    db.session.flush()
    for n in range(1, count + 1):
        db.session.add(
            WebhookDelivery(
                webhook_id=webhook_id,
                message_id=message.id,
                attempt=n,
                state="failed",
                request_headers={"webhook-id": "msg_x"},
                response_status=500,
                response_body="boom",
                duration=0.01,
                error="the receiver answered 500",
                started_at=message.created_at,
            )
        )
    db.session.commit()


def test_deliveries_newest_first_paged_with_detail_and_redelivery(client, as_admin, hook):
    webhook = hook()["id"]
    log_attempts(webhook, 3)
    path = f"/api/webhooks/{webhook}/deliveries/"
    page = client.get(f"{path}?per_page=2", headers=as_admin)
    assert [d["attempt"] for d in page.json] == [3, 2]
    assert page.headers["X-Total-Count"] == "3"
    rest = client.get(link_map(page)["next"], headers=as_admin)
    assert [d["attempt"] for d in rest.json] == [1]
    first = page.json[0]
    assert (first["message_id"], first["type"], first["state"]) == ("msg_x", "ping", "failed")
    assert (first["response_status"], first["message_state"]) == (500, "failed")
    detail = client.get(f"{path}{first['id']}/", headers=as_admin)
    assert detail.status_code == 200
    assert detail.json["request_headers"] == {"webhook-id": "msg_x"}
    assert (detail.json["request_body"], detail.json["response_body"]) == ("{}", "boom")
    again = client.post(f"{path}{first['id']}/redeliver", headers=as_admin)
    assert (again.status_code, again.json["state"]) == (202, "pending")
    assert [(m.state, m.msg_id) for m in messages()] == [("pending", "msg_x")]


@pytest.mark.parametrize("delivery", ["999", "99999999999999999999"])
def test_a_delivery_of_another_webhook_or_none_is_404(client, as_admin, hook, delivery):
    mine, other = hook()["id"], hook()["id"]
    log_attempts(other, 1)
    theirs = db.session.scalar(sa.select(WebhookDelivery.id))
    for did in (theirs, delivery):
        path = f"/api/webhooks/{mine}/deliveries/{did}/"
        assert client.get(path, headers=as_admin).status_code == 404
        assert client.post(f"{path}redeliver", headers=as_admin).status_code == 404


def test_comments_tell_of_themselves_and_who_did_it(
    client, as_alice, as_bob, as_admin, hook, new_issue
):
    hook(events=["comment.created", "comment.updated", "comment.deleted"])
    issue = new_issue()
    path = f"/api/{issue['id']}/comments/"
    comment = client.post(path, json={"body": "On it"}, headers=as_bob).json
    client.patch(f"{path}{comment['id']}/", json={"body": "On it"}, headers=as_bob)  # no change
    client.patch(f"{path}{comment['id']}/", json={"body": "Done"}, headers=as_bob)
    client.delete(f"{path}{comment['id']}/", headers=as_admin)
    bodies = [json.loads(m.body) for m in messages()]
    assert [b["type"] for b in bodies] == ["comment.created", "comment.updated", "comment.deleted"]
    created, updated, deleted = (b["data"] for b in bodies)
    assert created | {"actor": None} == comment | {"actor": None}
    assert (created["actor"]["username"], updated["body"]) == ("bob", "Done")
    assert (deleted["id"], deleted["actor"]["username"]) == (comment["id"], "root")


def test_a_new_set_of_labels_is_a_change(client, as_admin, as_alice, hook, new_issue):
    for name in ("bug", "urgent"):
        client.post("/api/labels/", json={"name": name}, headers=as_admin)
    issue = new_issue(labels=["bug"])
    hook(events=["issue.updated"])
    client.patch(f"/api/{issue['id']}/", json={"labels": ["urgent", "bug"]}, headers=as_alice)
    (message,) = messages()
    data = json.loads(message.body)["data"]
    assert (data["labels"], data["changes"]) == (["bug", "urgent"], {"labels": {"from": ["bug"]}})
