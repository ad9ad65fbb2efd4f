"""Webhooks for real: gunicorn with several workers, a receiver on loopback verifying with the
`standardwebhooks` package, retries, `kill -9` of the runner, and a receiver that hangs while
assignment emails fall due (they must stay punctual)."""

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from helpers import (
    CLOSE,
    PASSWORD,
    Receiver,
    Server,
    SmtpSink,
    bearer,
    gunicorn,
    outbox,
    wait_until,
)

from sit.cli import create_user
from sit.extensions import db
from sit.models import WebhookMessage

SETTINGS = {
    "SIT_WEBHOOK_ALLOWED_HOSTS": "loopback",
    "SIT_WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s",
    "SIT_WEBHOOK_TIMEOUT": "2s",
    "SIT_ASSIGNMENT_EMAIL_DELAY": "2s",
}


@pytest.fixture
def people(app):
    """Authorization headers of an admin, alice and bob, and bob's and alice's ids."""
    admin = create_user("root", "root@example.com", PASSWORD, is_admin=True)
    alice = create_user("alice", "alice@example.com", PASSWORD)
    bob = create_user("bob", "bob@example.com", PASSWORD)
    heads = [bearer(user) | CLOSE for user in (admin, alice, bob)]
    return *heads, bob.id, alice.id


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def call(server: Server, headers, method, path, **body):
    response = requests.request(method, server.url + path, json=body or None, headers=headers)
    assert response.status_code < 300, response.text
    return response.json() if response.content else {}


def serve(instance: Path, smtp: SmtpSink, workers: int = 3):
    return gunicorn(instance, workers, **smtp.env, **SETTINGS)


def messages():
    db.session.rollback()
    return list(db.session.scalars(sa.select(WebhookMessage).order_by(WebhookMessage.id)))


def delivered(count):
    found = messages()
    return len(found) == count and all(m.state == "delivered" for m in found)


def test_changes_arrive_signed_each_delivered_once_through_failures(
    instance, smtp, people, receiver
):
    as_admin, as_alice, as_bob, bob_id, alice_id = people
    receiver.fail_first = 2  # 500, 500, then 200 for each message
    with serve(instance, smtp) as server:
        secret = call(server, as_admin, "POST", "/api/webhooks/", url=receiver.url)["secret"]
        issue = call(server, as_alice, "POST", "/api/", title="Sink leaks", assigned_to=bob_id)
        path = f"/api/{issue['id']}/"
        call(server, as_alice, "PATCH", path, assigned_to=alice_id)
        call(server, as_bob, "POST", f"{path}comments/", body="Wrench in hand")
        call(server, as_alice, "DELETE", path)
        wait_until(lambda: delivered(4), 30, "four messages delivered")
    bodies = receiver.verified(secret)  # raises unless every one verifies
    assert Counter(body["type"] for body in bodies) == Counter(
        ["issue.created", "issue.updated", "comment.created", "issue.deleted"]
    )
    updated = next(body for body in bodies if body["type"] == "issue.updated")
    assert updated["data"]["changes"] == {"assigned_to": {"from": bob_id}}
    assert updated["data"]["assigned_to"] == alice_id
    tries = Counter(hook.msg_id for hook in receiver.got)
    assert sorted(tries.values()) == [3, 3, 3, 3]
    assert Counter(hook.msg_id for hook in receiver.got if hook.status == 200) == Counter(
        dict.fromkeys(tries, 1)
    )
    assert {m.msg_id for m in messages()} == set(tries)


def test_kill_9_of_the_runner_between_commit_and_delivery_loses_nothing(
    instance, smtp, people, receiver
):
    as_admin, as_alice, _, bob_id, _ = people
    receiver.held.clear()  # the first delivery hangs in the receiver
    with serve(instance, smtp, workers=2) as server:
        runner = server.runner()
        call(server, as_admin, "POST", "/api/webhooks/", url=receiver.url)
        call(server, as_alice, "POST", "/api/", title="Roof", assigned_to=bob_id)
        wait_until(lambda: receiver.arrived == 1, 10, "the delivery to be in flight")
        os.kill(runner, signal.SIGKILL)
        receiver.held.set()
        wait_until(lambda: delivered(1), 30, "the message delivered by the next runner")
    (message,) = messages()
    assert message.attempts == 1  # the killed attempt was never recorded: it did not happen
    assert {hook.msg_id for hook in receiver.got} == {message.msg_id}


def test_a_receiver_that_hangs_past_the_timeout_leaves_emails_punctual(
    instance, smtp, people, receiver
):
    as_admin, as_alice, _, bob_id, _ = people
    receiver.delay = 3  # past SIT_WEBHOOK_TIMEOUT: every delivery times out
    with serve(instance, smtp) as server:
        call(server, as_admin, "POST", "/api/webhooks/", url=receiver.url)
        for n in range(8):  # twice as many messages as senders: they stay busy
            call(server, as_alice, "POST", "/api/", title=f"Leak {n}", assigned_to=bob_id)
        wait_until(lambda: len(smtp.received) == 8, 30, "eight assignment emails")
        assert receiver.arrived >= 4  # the senders were busy while the emails fell due
    due = {email.message_id: email.due_at.timestamp() for email in outbox()}
    late = [mail.arrived - due[mail.message["Message-ID"]] for mail in smtp.received]
    assert min(late) >= 0
    assert max(late) <= 1.0, sorted(late)
