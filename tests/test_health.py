"""How delivery stands: the one reading (`sit.health`), `/healthz`, and `flask sit status`."""

import secrets
from datetime import timedelta

import pytest
import sqlalchemy as sa
from helpers import flask_cli, free_port

from sit import clock, health
from sit.extensions import db
from sit.health import RunnerSeen
from sit.models import Email

NO_WEBHOOKS = {"pending": 0, "retrying": 0, "overdue": 0, "failed": 0}
NOBODY = {"runner": None, **NO_WEBHOOKS}


@pytest.fixture
def now(app, monkeypatch):
    """The clock, stopped (whole seconds), to move with `move`."""
    moment = clock.utcnow().replace(microsecond=0)
    monkeypatch.setattr(clock, "utcnow", lambda: moment)
    return moment


def move(monkeypatch, to):
    monkeypatch.setattr(clock, "utcnow", lambda: to)


def queue(user, due_at, state="pending"):
    """An email to `user` in the outbox, due at `due_at`."""
    email = Email(
        kind="assignment",
        recipient=user,
        to_address=user.email,
        subject="s",
        message_id=f"<{secrets.token_hex(8)}@test>",
        due_at=due_at,
        state=state,
        attempts=0,
    )
    db.session.add(email)
    return email


def test_without_a_runner_healthz_is_degraded(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    expected = {
        "status": "degraded",
        "database": "ok",
        "delivery": NOBODY | {"last_error": None, "webhooks": NO_WEBHOOKS},
    }
    assert response.json == expected


def test_a_runner_is_seen_for_ten_seconds_after_its_heartbeat(client, now, monkeypatch):
    since = now - timedelta(hours=1)
    health.beat("web-1", 4242, since)
    assert health.read().runner == RunnerSeen("web-1", 4242, since)
    body = client.get("/healthz").json
    assert body["status"] == "ok"
    assert body["delivery"]["runner"] == {
        "host": "web-1",
        "pid": 4242,
        "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    move(monkeypatch, now + timedelta(seconds=10))  # SPEC §11: seen within 10 s
    assert health.read().runner is not None
    move(monkeypatch, now + timedelta(seconds=11))
    assert health.read().runner is None
    assert client.get("/healthz").json["status"] == "degraded"


def test_a_runner_stepping_down_clears_only_its_own_row(app, now):
    health.beat("web-1", 4242, now)
    health.forget("web-1", 4243)
    health.forget("web-2", 4242)
    assert health.read().runner is not None
    health.forget("web-1", 4242)
    assert health.read().runner is None


def test_counts_and_the_latest_error_while_an_email_is_retrying(app, alice, now):
    health.beat("web-1", 1, now)
    queue(alice, now)  # pending, due now
    queue(alice, now - timedelta(seconds=59))  # not overdue yet
    queue(alice, now - timedelta(seconds=61))  # overdue: due over 60 s ago, never tried
    latest, earlier = queue(alice, now), queue(alice, now)  # not in the order of their ids
    latest.mark_failed_attempt("451 later", now - timedelta(seconds=5), 30, 86400)
    earlier.mark_failed_attempt("Connection refused", now - timedelta(seconds=20), 30, 86400)
    gave_up = queue(alice, now - timedelta(days=2))
    gave_up.mark_failed_attempt("550 no such user", now, 30, 0)  # failed, latest of all
    queue(alice, now - timedelta(hours=1), state="sent")
    db.session.commit()
    delivery = health.read()
    assert (delivery.pending, delivery.retrying, delivery.overdue, delivery.failed) == (5, 2, 1, 1)
    assert delivery.last_error == "451 later"  # of a retrying email, the latest attempt's
    assert delivery.status == "degraded"


def test_an_attempt_failing_while_it_is_read_never_shows_retrying_without_its_error(
    app, alice, now
):
    """The runner commits between the reading's statements (as under gunicorn on PostgreSQL)."""
    email = queue(alice, now)
    db.session.commit()
    email_id = email.id

    seen = []

    def fail_the_attempt(*args: object) -> None:
        seen.append(args[2])
        if len(seen) == 1:  # after the first, from another connection: the runner's
            with db.engine.begin() as other:
                failed = {"attempts": 1, "last_error": "Connection refused", "last_error_at": now}
                other.execute(sa.update(Email).where(Email.id == email_id).values(failed))

    sa.event.listen(db.engine, "after_cursor_execute", fail_the_attempt)
    try:
        delivery = health.read()
    finally:
        sa.event.remove(db.engine, "after_cursor_execute", fail_the_attempt)
    assert (delivery.retrying, delivery.last_error) in ((0, None), (1, "Connection refused"))
    assert (health.read().retrying, health.read().last_error) == (1, "Connection refused")


@pytest.mark.parametrize(
    ("state", "degraded"),
    [("overdue", True), ("retrying", True), ("failed", False), ("due soon", False)],
)
def test_degraded_while_an_email_is_retrying_or_overdue(app, alice, now, state, degraded):
    health.beat("web-1", 1, now)
    email = queue(alice, now - timedelta(seconds=61 if state == "overdue" else -30))
    if state in ("retrying", "failed"):
        email.mark_failed_attempt("451 later", now, 30, 86400 if state == "retrying" else 0)
    db.session.commit()
    delivery = health.read()
    assert delivery.status == ("degraded" if degraded else "ok")
    assert delivery.last_error == ("451 later" if state == "retrying" else None)


# flask sit status


def test_status_exits_0_while_a_runner_is_seen_and_nothing_is_late(app, instance):
    health.beat("web-1", 4242, clock.utcnow())
    result = flask_cli(instance, "sit", "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["status:     ok", "database:   ok"]
    assert lines[2].startswith("runner:     web-1 pid 4242, since ")


def test_status_exits_1_when_degraded(app, instance):
    result = flask_cli(instance, "sit", "status")
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == "status:     degraded"
    assert "runner:     none seen in the last 10 s" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{instance}/missing/folder/sit.db",
        "postgresql+psycopg://postgres@127.0.0.1:{port}/sit",
    ],
    ids=["sqlite unopenable", "postgresql closed port"],
)
def test_status_exits_2_with_one_line_when_the_database_cannot_be_reached(instance, url):
    url = url.format(instance=instance, port=free_port())
    result = flask_cli(instance, "sit", "status", SIT_SQLALCHEMY_DATABASE_URI=url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: database: ")
    assert result.stdout == ""
