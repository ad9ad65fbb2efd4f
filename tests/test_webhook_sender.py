"""Sending webhook messages: signed as Standard Webhooks says (verified by the `standardwebhooks`
package), retried on the schedule, never redirected, timed out, deactivated after failing; and
the address guard, at creation and on the address each attempt connects to. Every target here
is loopback or refused before connecting: no traffic leaves the machine."""

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import PASSWORD, Receiver, app_context, bearer, wait_until

from sit import metrics
from sit.cli import create_user
from sit.extensions import db
from sit.models import Webhook, WebhookDelivery, WebhookMessage
from sit.webhooks import sender

LOOPBACK = {"SIT_WEBHOOK_ALLOWED_HOSTS": "loopback", "SIT_WEBHOOK_RETRY_SCHEDULE": "5s,1m"}


@pytest.fixture
def app(instance):
    with app_context(**LOOPBACK) as app:
        yield app


@pytest.fixture
def as_admin(app):
    return bearer(create_user("root", "root@example.com", PASSWORD, is_admin=True))


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def hooked(client, as_admin, receiver):
    """A webhook to the receiver, for every type; returns its JSON, secret included."""
    response = client.post("/api/webhooks/", json={"url": receiver.url}, headers=as_admin)
    assert response.status_code == 201, response.json
    return response.json


def pending():
    db.session.rollback()
    return list(
        db.session.scalars(sa.select(WebhookMessage).where(WebhookMessage.state == "pending"))
    )


def send_pending():
    """One attempt at each pending message, whether due or not, as a sender thread makes it."""
    for message in pending():
        sender.send(message.id)
    db.session.rollback()


def test_messages_arrive_signed_as_standard_webhooks_verify(hooked, receiver, new_issue, client):
    issue = new_issue()
    client.post(f"/api/webhooks/{hooked['id']}/ping", headers=bearer_of("root"))
    send_pending()
    created, ping = receiver.verified(hooked["secret"])
    assert (created["type"], created["data"]["id"]) == ("issue.created", issue["id"])
    assert ping["type"] == "ping"
    assert receiver.got[0].headers["Content-Type"] == "application/json"
    assert [m.state for m in db.session.scalars(sa.select(WebhookMessage))] == ["delivered"] * 2
    with pytest.raises(Exception, match="signature"):
        receiver.verified("whsec_" + "A" * 43 + "=")  # another secret


def bearer_of(username):
    from sit.models import User

    return bearer(db.session.scalar(sa.select(User).filter_by(username=username)))


def test_a_failure_is_retried_on_the_schedule_with_the_same_id_then_failed(
    hooked, receiver, new_issue, clock
):
    receiver.answers = [500, 503, 502]
    new_issue()
    for expected_delay in (5, 60):
        send_pending()
        (message,) = pending()
        assert message.due_at == clock.now + timedelta(seconds=expected_delay)
    send_pending()
    message = db.session.scalar(sa.select(WebhookMessage))
    assert (message.state, message.attempts) == ("failed", 3)
    assert message.last_error == "the receiver answered 502"
    assert {hook.msg_id for hook in receiver.got} == {message.msg_id}
    log = db.session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
    assert [(d.attempt, d.response_status, d.state) for d in log] == [
        (1, 500, "failed"),
        (2, 503, "failed"),
        (3, 502, "failed"),
    ]
    assert log[0].request_headers["webhook-id"] == message.msg_id
    assert log[0].response_body == "ok"


def test_a_redirect_is_not_followed(hooked, receiver, new_issue):
    receiver.answers = [302]
    new_issue()
    send_pending()
    (message,) = pending()
    assert "302" in message.last_error and "redirects are not followed" in message.last_error
    assert len(receiver.got) == 1


def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(app, hooked, receiver, new_issue):
    app.config["WEBHOOK_TIMEOUT"] = 1
    receiver.delay = 1.5
    new_issue()
    send_pending()
    (message,) = pending()
    assert "timed out" in message.last_error.lower()
    delivery = db.session.scalar(sa.select(WebhookDelivery))
    assert 1 <= delivery.duration < 1.5


def test_an_endpoint_failing_for_disable_after_is_deactivated_and_says_so(
    app, client, hooked, receiver, new_issue, clock
):
    app.config["WEBHOOK_DISABLE_AFTER"] = 600
    receiver.answers = [500] * 10
    new_issue()
    send_pending()
    clock.advance(599)
    new_issue()
    send_pending()
    assert db.session.get(Webhook, hooked["id"]).active
    clock.advance(1)
    send_pending()
    as_admin = bearer_of("root")
    shown = client.get(f"/api/webhooks/{hooked['id']}/", headers=as_admin).json
    assert shown["active"] is False
    assert shown["disabled_reason"].startswith("deactivated: every delivery has failed since")
    assert pending() == []
    again = client.patch(f"/api/webhooks/{hooked['id']}/", json={"active": True}, headers=as_admin)
    assert (again.json["active"], again.json["disabled_reason"]) == (True, None)


def test_a_success_resets_the_failing_clock(app, hooked, receiver, new_issue, clock):
    receiver.answers = [500]
    new_issue()
    send_pending()
    assert db.session.get(Webhook, hooked["id"]).failing_since == clock.now
    send_pending()
    assert db.session.get(Webhook, hooked["id"]).failing_since is None


def test_the_runner_hands_due_messages_to_its_senders(app, hooked, receiver, new_issue):
    new_issue()
    new_issue()
    assert sender.hand_due(app) == 2
    wait_until(lambda: len(receiver.got) == 2, 10, "two deliveries")
    wait_until(lambda: not pending(), 10, "the outcomes to be committed")
    assert sender.hand_due(app) == 0


# The address guard.

REFUSED = [
    ("http://127.0.0.1:{port}/", "127.0.0.1 is not a public address (loopback)", "loopback"),
    ("http://[::1]/", "::1 is not a public address (loopback)", "::1/128"),
    ("http://169.254.169.254/", "(link-local)", "169.254.0.0/16"),
    ("http://localhost:{port}/", "localhost resolves to", "localhost"),
    ("http://10.1.2.3/", "(private)", "private"),
    ("http://0.0.0.0/", "(unspecified)", "0.0.0.0/32"),
    ("http://224.0.0.1/", "(multicast)", "224.0.0.0/4"),
    ("http://[::ffff:127.0.0.1]/", "(loopback)", "loopback"),
]


@pytest.fixture
def no_connection(monkeypatch):
    """Fail the test if anything opens a connection (a refusal never connects)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the guard let a connection through")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize(("url", "said", "allowance"), REFUSED)
def test_a_target_that_is_not_public_is_refused_unless_allowed(
    app, client, as_admin, no_connection, url, said, allowance
):
    url = url.format(port=8)
    app.config["WEBHOOK_ALLOWED_HOSTS"] = ()
    refused = client.post("/api/webhooks/", json={"url": url}, headers=as_admin)
    assert refused.status_code == 400
    assert said in refused.json["errors"]["url"][0]
    app.config["WEBHOOK_ALLOWED_HOSTS"] = (allowance,)
    allowed = client.post("/api/webhooks/", json={"url": url}, headers=as_admin)
    assert allowed.status_code == 201, allowed.json


@pytest.mark.parametrize(("url", "said", "allowance"), REFUSED)
def test_a_delivery_to_a_refused_address_is_a_failed_attempt_made_without_connecting(
    app, no_connection, url, said, allowance
):
    app.config["WEBHOOK_ALLOWED_HOSTS"] = ()
    result = sender.attempt(url.format(port=8), "whsec_" + "A" * 43 + "=", "msg_1", "{}")
    assert result.error.startswith("refused: ") and said in result.error
    assert result.status is None


def test_a_name_that_resolves_to_loopback_at_delivery_is_refused_there(
    app, client, as_admin, hooked, receiver, new_issue, monkeypatch
):
    """DNS rebinding: public when the webhook is created, loopback when it is delivered."""
    app.config["WEBHOOK_ALLOWED_HOSTS"] = ()
    answers = {"hooks.example": "93.184.216.34"}
    monkeypatch.setattr(socket, "getaddrinfo", resolver(answers, receiver))
    url = f"http://hooks.example:{receiver.url.split(':')[2]}"
    created = client.post("/api/webhooks/", json={"url": url}, headers=as_admin)
    assert created.status_code == 201
    db.session.execute(sa.delete(Webhook).where(Webhook.id == hooked["id"]))
    db.session.commit()
    answers["hooks.example"] = "127.0.0.1"
    new_issue()
    send_pending()
    (message,) = pending()
    assert message.last_error.startswith("refused: hooks.example resolves to 127.0.0.1")
    assert receiver.got == []


def test_an_allowed_name_is_posted_to_at_its_checked_address_with_its_host(
    app, client, as_admin, receiver, new_issue, monkeypatch
):
    app.config["WEBHOOK_ALLOWED_HOSTS"] = ("hooks.example",)
    monkeypatch.setattr(socket, "getaddrinfo", resolver({"hooks.example": "127.0.0.1"}, receiver))
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"http://hooks.example:{port}/in?team=1"
    assert client.post("/api/webhooks/", json={"url": url}, headers=as_admin).status_code == 201
    new_issue()
    send_pending()
    (hook,) = receiver.got
    assert hook.headers["Host"] == f"hooks.example:{port}"
    assert json.loads(hook.body)["type"] == "issue.created"


@pytest.fixture
def slow_dns(monkeypatch):
    """`socket.getaddrinfo` as a resolver slow to answer for `hooks.example`: set `answers[0]`
    to the seconds it takes (30, by default: a resolver that does not answer) and `answers[1]`
    to the address it then gives (none: it fails)."""
    answers, released, real = [30, None], threading.Event(), socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "hooks.example":
            return real(host, port, *args, **kwargs)
        released.wait(answers[0])
        if answers[1] is None:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[1], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield answers
    released.set()


def test_a_name_that_does_not_resolve_in_time_fails_the_attempt_within_the_timeout(
    app, client, as_admin, new_issue, slow_dns
):
    """getaddrinfo has no timeout: a resolver that never answers holds neither the webhook's
    creation nor a delivery longer than WEBHOOK_TIMEOUT."""
    app.config["WEBHOOK_TIMEOUT"] = 1
    started = time.monotonic()
    hook = {"url": "http://hooks.example/in"}
    assert client.post("/api/webhooks/", json=hook, headers=as_admin).status_code == 201
    assert time.monotonic() - started < 1.5  # passes: each delivery checks again
    new_issue()
    send_pending()
    (message,) = pending()
    assert message.last_error == "TimeoutError: hooks.example did not resolve within 1 s"
    assert 1 <= db.session.scalar(sa.select(WebhookDelivery.duration)) < 1.5


def test_the_lookup_and_the_post_share_the_timeout(
    app, client, as_admin, receiver, new_issue, slow_dns
):
    app.config["WEBHOOK_TIMEOUT"] = 1
    app.config["WEBHOOK_ALLOWED_HOSTS"] = ("hooks.example",)
    slow_dns[:] = [0, "127.0.0.1"]
    url = f"http://hooks.example:{receiver.url.split(':')[2]}"
    assert client.post("/api/webhooks/", json={"url": url}, headers=as_admin).status_code == 201
    slow_dns[0], receiver.delay = 0.6, 0.6  # each within the timeout, not both
    new_issue()
    send_pending()
    (message,) = pending()
    assert "timed out" in message.last_error.lower()
    assert 1 <= db.session.scalar(sa.select(WebhookDelivery.duration)) < 1.5


def resolver(answers, receiver):
    """`socket.getaddrinfo` answering `answers` for their names, as DNS would."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    return getaddrinfo


def counted(result):
    return metrics.OWN.get_sample_value("sit_webhook_deliveries_total", {"result": result}) or 0


def test_messages_are_counted_by_healthz_status_metrics_and_listed(
    client, runner, hooked, receiver, new_issue
):
    before = counted("delivered"), counted("failed")
    receiver.answers = [500]
    new_issue()
    new_issue()
    send_pending()  # the first fails, the second is delivered
    assert (counted("delivered"), counted("failed")) == (before[0] + 1, before[1] + 1)
    counts = {"pending": 1, "retrying": 1, "overdue": 0, "failed": 0}
    assert client.get("/healthz").json["delivery"]["webhooks"] == counts
    scraped = client.get("/metrics").text
    assert 'sit_webhook_messages{state="retrying"} 1.0' in scraped
    assert "sit_webhook_duration_seconds_count" in scraped
    status = runner.invoke(args=["sit", "status"])
    assert "webhooks:   1 pending, 1 retrying, 0 overdue, 0 failed" in status.output
    listed = runner.invoke(args=["sit", "webhooks"]).output.splitlines()
    assert listed[0].split() == [
        "id",
        "state",
        "pending",
        "failed",
        "failing",
        "since",
        "(UTC)",
        "url",
    ]
    assert listed[1].split()[:4] == [str(hooked["id"]), "active", "1", "0"]
    assert listed[1].endswith(hooked["url"])
