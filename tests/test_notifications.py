"""What emails an issue change causes, through the real API: the outbox rows and their jobs."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from helpers import outbox

from sit import notifications, scheduler
from sit.extensions import db
from sit.models import Issue, User


@pytest.fixture
def now(app, monkeypatch):
    """SIT's clock, stopped (whole seconds: the job store keeps a float)."""
    moment = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr("sit.clock.utcnow", lambda: moment)
    return moment


def states():
    return [(email.state, email.to_address) for email in outbox()]


def jobs():
    """The stored jobs: id -> next run time."""
    return {job.id: job.next_run_time for job in scheduler.get().jobs()}


def patch(client, headers, issue, **fields):
    response = client.patch(f"/api/{issue['id']}/", json=fields, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


# assignment emails


def test_create_with_an_assignee_schedules_one_email_for_them(app, new_issue, bob, now):
    issue = new_issue(title="Printer on fire")
    (email,) = outbox()
    delay = timedelta(seconds=app.config["ASSIGNMENT_EMAIL_DELAY"])
    assert (email.kind, email.state, email.recipient_id) == ("assignment", "pending", bob.id)
    assert email.to_address == "bob@example.com"
    assert email.issue_id == issue["id"]
    assert email.due_at == now + delay
    assert email.attempts == 0 and email.sent_at is None
    assert jobs() == {f"email-{email.id}": now + delay}


def test_the_issue_its_email_and_the_emails_job_are_committed_together(client, as_alice, bob):
    """One transaction, so one wait for SQLite's write lock, per create."""
    commits = []

    def count(connection: sa.Connection) -> None:
        commits.append(connection)

    sa.event.listen(db.engine, "commit", count)
    try:
        body = {"title": "t", "assigned_to": bob.id}
        assert client.post("/api/", json=body, headers=as_alice).status_code == 201
    finally:
        sa.event.remove(db.engine, "commit", count)
    assert len(commits) == 1
    assert set(jobs()) == {f"email-{outbox()[0].id}"}


def test_the_outbox_subject_names_the_new_issue(new_issue):
    issue = new_issue(title="Printer on fire")
    (email,) = outbox()
    assert email.subject == f"Issue #{issue['issue_id']} assigned to you: Printer on fire"


def test_create_without_an_assignee_schedules_nothing(new_issue):
    new_issue(assigned_to=None)
    assert outbox() == []
    assert jobs() == {}


def test_reassign_cancels_the_old_email_and_schedules_one_for_the_new_assignee(
    client, as_alice, new_issue, carol
):
    issue = new_issue()
    patch(client, as_alice, issue, assigned_to=carol.id)
    assert states() == [("cancelled", "bob@example.com"), ("pending", "carol@example.com")]
    assert set(jobs()) == {f"email-{outbox()[-1].id}"}


def test_unassign_cancels_and_schedules_nothing(client, as_alice, new_issue):
    issue = new_issue()
    patch(client, as_alice, issue, assigned_to=None)
    assert states() == [("cancelled", "bob@example.com")]
    assert jobs() == {}


@pytest.mark.parametrize("method", ["patch-title", "put-same-assignee"])
def test_an_update_that_keeps_the_assignee_schedules_nothing(client, as_alice, new_issue, method):
    issue = new_issue()
    (email,) = outbox()
    if method == "patch-title":
        patch(client, as_alice, issue, title="Renamed", status="C")
    else:
        body = {"title": "Renamed", "description": "New", "assigned_to": issue["assigned_to"]}
        assert client.put(f"/api/{issue['id']}/", json=body, headers=as_alice).status_code == 200
    assert states() == [("pending", "bob@example.com")]
    assert set(jobs()) == {f"email-{email.id}"}


def test_a_to_b_to_a_leaves_one_new_pending_email_for_a(client, as_alice, new_issue, alice, bob):
    issue = new_issue(assigned_to=bob.id)
    patch(client, as_alice, issue, assigned_to=alice.id)
    patch(client, as_alice, issue, assigned_to=bob.id)
    assert states() == [
        ("cancelled", "bob@example.com"),
        ("cancelled", "alice@example.com"),
        ("pending", "bob@example.com"),
    ]
    assert set(jobs()) == {f"email-{outbox()[-1].id}"}


def test_delete_cancels_the_email_and_keeps_its_row(client, as_alice, new_issue):
    issue = new_issue()
    response = client.delete(f"/api/{issue['id']}/", headers=as_alice)
    assert response.status_code == 204
    (email,) = outbox()
    assert (email.state, email.issue_id) == ("cancelled", None)
    assert jobs() == {}


def refused_requests(client, issue, as_alice, as_bob):
    """Requests the API refuses: (response, expected status)."""
    url = f"/api/{issue['id']}/"
    return {
        "not-the-creator": (client.patch(url, json={"assigned_to": None}, headers=as_bob), 403),
        "stale-if-match": (
            client.patch(url, json={"assigned_to": None}, headers=as_alice | {"If-Match": '"x"'}),
            412,
        ),
        "unknown-assignee": (client.patch(url, json={"assigned_to": 999}, headers=as_alice), 400),
        "create-for-unknown": (
            client.post("/api/", json={"title": "t", "assigned_to": 999}, headers=as_alice),
            400,
        ),
        "delete-not-the-creator": (client.delete(url, headers=as_bob), 403),
    }


def test_refused_requests_write_no_email(client, as_alice, as_bob, new_issue):
    issue = new_issue()
    (email,) = outbox()
    for name, (response, status) in refused_requests(client, issue, as_alice, as_bob).items():
        assert response.status_code == status, name
        assert states() == [("pending", "bob@example.com")], name
    assert set(jobs()) == {f"email-{email.id}"}


# who still wants an email


def test_a_user_wants_a_kind_of_email_while_active_and_not_turned_off(alice, bob, carol):
    bob.change({"notify_digest": False})
    carol.change({"active": False})
    db.session.commit()

    def wanting(kind):
        query = sa.select(User.username).where(notifications.wants(kind))
        return set(db.session.scalars(query))

    assert wanting("assignment") == {"alice", "bob"}
    assert wanting("digest") == {"alice"}


# digests


def assign_issues(creator, *assignees):
    """One issue for each assignee, written directly to the database (no assignment email)."""
    db.session.add_all(Issue(title="t", creator=creator, assigned_to_id=u.id) for u in assignees)
    db.session.commit()


def test_queue_digests_queues_one_due_now_per_user_with_issues(alice, bob, carol, now):
    assign_issues(alice, bob, bob, carol)
    assert notifications.queue_digests() == 2
    digests = outbox(kind="digest")
    assert [(d.to_address, d.subject) for d in digests] == [
        ("bob@example.com", "Your SIT digest: 2 issues assigned to you"),
        ("carol@example.com", "Your SIT digest: 1 issues assigned to you"),
    ]
    assert {(d.state, d.due_at, d.recipient_id) for d in digests} == {
        ("pending", now, bob.id),
        ("pending", now, carol.id),
    }
    assert len({d.message_id for d in digests}) == 2


def test_queue_digests_skips_users_who_do_not_want_one_now(alice, bob, carol, now):
    assign_issues(alice, alice, bob, carol)
    bob.change({"notify_digest": False})
    carol.change({"active": False})
    db.session.commit()
    assert notifications.queue_digests() == 1
    assert [d.recipient_id for d in outbox(kind="digest")] == [alice.id]


def test_queue_digests_with_no_assigned_issue_queues_nothing(alice, new_issue):
    new_issue(assigned_to=None)
    assert notifications.queue_digests() == 0
    assert outbox() == []


def test_a_new_digest_run_cancels_only_the_previous_runs_pending_digests(new_issue, now):
    new_issue()
    notifications.queue_digests()
    (first,) = outbox(kind="digest")
    first.state, first.sent_at = "sent", now  # as a delivery pass settles it
    db.session.commit()
    notifications.queue_digests()
    notifications.queue_digests()
    assert [(email.kind, email.state) for email in outbox()] == [
        ("assignment", "pending"),
        ("digest", "sent"),
        ("digest", "cancelled"),
        ("digest", "pending"),
    ]
