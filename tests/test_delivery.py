"""Email delivery for real: gunicorn with 4 workers, an SMTP server on loopback, kills and outages.

Delays are seconds, set through the same `SIT_*` keys users set; every wait has a deadline.
"""

import os
import re
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from conftest import Server, SmtpSink, bearer, flask_cli, gunicorn, outbox, wait_until

from sit.cli import create_user
from sit.clock import utcnow
from sit.extensions import db
from sit.models import Issue

DELAY = 2  # SIT_ASSIGNMENT_EMAIL_DELAY, seconds
CLOSE = {"Connection": "close"}  # a new connection per request, so any worker may take it
SUBJECT = re.compile(r"Issue #([0-9a-f]{12}) assigned to you")


def serve(instance: Path, smtp: SmtpSink, **env: str) -> AbstractContextManager[Server]:
    settings = {"SIT_ASSIGNMENT_EMAIL_DELAY": f"{DELAY}s", "SIT_EMAIL_RETRY_DELAY": "1s"}
    return gunicorn(instance, 4, **smtp.env, **settings | env)


@dataclass
class Account:
    """A user as the tests' HTTP threads need it (no ORM object crosses threads)."""

    id: int
    email: str
    headers: dict[str, str]


@pytest.fixture
def users(app: Any) -> list[Account]:
    """alice, bob, carol and dave."""
    accounts = []
    for name in ("alice", "bob", "carol", "dave"):
        user = create_user(name, f"{name}@example.com", "pw", name.title())
        accounts.append(Account(user.id, user.email, bearer(user) | CLOSE))
    return accounts


def call(server: Server, user: Account, method: str, path: str, **body: Any) -> dict[str, Any]:
    headers = user.headers
    response = requests.request(method, server.url + path, json=body or None, headers=headers)
    assert response.status_code < 300, response.text
    return response.json() if response.content else {}


def settled() -> bool:
    """Every email sent, cancelled or failed: nothing more will arrive."""
    return all(email.state != "pending" for email in outbox())


def lateness(smtp: SmtpSink) -> list[float]:
    """Seconds from each received message's due time to its arrival."""
    due = {email.message_id: email.due_at.timestamp() for email in outbox()}
    return [r.arrived - due[r.message["Message-ID"]] for r in smtp.received]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def assigned(smtp: SmtpSink) -> Counter[tuple[str, str]]:
    """(issue_id, recipient) of every assignment email received, counted."""
    return Counter(
        (SUBJECT.match(r.subject).group(1), r.to[0])
        for r in smtp.received
        if SUBJECT.match(r.subject)
    )


def wait_for_mail(smtp: SmtpSink, count: int, timeout: float = 30) -> None:
    wait_until(lambda: len(smtp.received) >= count, timeout, f"{count} emails")
    wait_until(settled, timeout, "the outbox to settle")


def test_assignment_emails_arrive_once_on_time_and_superseded_ones_never(instance, smtp, users):
    alice, bob, carol, dave = users
    assignees = [bob, carol, dave]
    with serve(instance, smtp) as server, ThreadPoolExecutor(8) as pool:
        created = list(
            pool.map(
                lambda i: call(
                    server, alice, "POST", "/api/", title=f"#{i}", assigned_to=assignees[i % 3].id
                ),
                range(24),
            )
        )
        expected = Counter(
            (issue["issue_id"], assignees[i % 3].email) for i, issue in enumerate(created)
        )
        changes = [
            *[(i, "PATCH", {"assigned_to": assignees[(i + 1) % 3].id}) for i in range(0, 3)],
            *[(i, "PATCH", {"assigned_to": None}) for i in range(3, 5)],
            *[(i, "DELETE", {}) for i in range(5, 7)],
            *[(i, "PATCH", {"title": "kept assignee"}) for i in range(7, 9)],
            (9, "PUT", {"title": "same", "assigned_to": assignees[0].id}),
        ]
        for i, _, body in changes[:7]:
            expected.pop((created[i]["issue_id"], assignees[i % 3].email))
            if body.get("assigned_to"):
                expected[(created[i]["issue_id"], assignees[(i + 1) % 3].email)] += 1
        list(
            pool.map(
                lambda c: call(server, alice, c[1], f"/api/{created[c[0]]['id']}/", **c[2]), changes
            )
        )
        wait_for_mail(smtp, sum(expected.values()))

    assert assigned(smtp) == expected
    late = lateness(smtp)
    assert min(late) >= 0, "an email arrived before it was due"
    assert p99(late) <= 1.0, sorted(late)
    states = Counter(email.state for email in outbox())
    assert states == {"sent": sum(expected.values()), "cancelled": 7}


def test_a_lone_assignment_on_a_quiet_server_is_on_time(instance, smtp, users):
    alice, bob, *_ = users
    with serve(instance, smtp) as server:
        server.runner()  # elected, and idle: nothing else will wake its scheduler
        for count in range(1, 5):  # each to whichever worker takes the new connection
            call(server, alice, "POST", "/api/", title=f"lone {count}", assigned_to=bob.id)
            wait_for_mail(smtp, count)
    late = lateness(smtp)
    assert len(late) == 4
    assert min(late) >= 0
    assert max(late) <= 1.0, late


def digest_runs() -> Counter[tuple[Any, str]]:
    """(run, recipient) of each digest email, counted; a run's emails share their created_at."""
    return Counter((e.created_at, e.to_address) for e in outbox() if e.kind == "digest")


def test_digests_one_per_user_with_issues_per_interval_over_four_workers(instance, smtp, users):
    alice, bob, carol, _ = users
    for title, status, assignee in [
        ("closed", "C", alice),
        ("older open", "O", alice),
        ("newer open", "O", alice),
        ("bob's", "O", bob),
    ]:
        db.session.add(
            Issue(title=title, status=status, assigned_to_id=assignee.id, created_by_id=carol.id)
        )
        db.session.commit()  # one by one: created_at orders them
    with serve(instance, smtp, SIT_DIGEST_INTERVAL="2s"):
        wait_until(lambda: len(smtp.to(alice.email)) >= 3, 30, "three digests for alice")
    runs = digest_runs()
    assert set(runs.values()) == {1}, "a user got two digests in one run"
    times = sorted({run for run, _ in runs})
    assert all((b - a).total_seconds() >= 1.9 for a, b in pairwise(times)), times
    assert {to for _, to in runs} == {alice.email, bob.email}
    assert smtp.to(carol.email) == []
    assert len(smtp.received) == len({r.message["Message-ID"] for r in smtp.received})
    digest = smtp.to(alice.email)[-1]
    assert digest.subject == "Your SIT digest: 3 issues assigned to you"
    text = digest.part("plain")
    assert text.index("newer open") < text.index("older open") < text.index("closed")


def test_send_digest_hands_the_run_to_the_running_server(instance, smtp, users):
    alice, bob, carol, _ = users
    for assignee in (alice, bob):
        db.session.add(Issue(title="t", assigned_to_id=assignee.id, created_by_id=carol.id))
    db.session.commit()
    with serve(instance, smtp) as server:
        server.runner()
        result = flask_cli(instance, "sit", "send-digest", **smtp.env)
        assert result.returncode == 0, result.stderr
        assert "running server" in result.stdout
        wait_for_mail(smtp, 2)
    assert sorted(r.to[0] for r in smtp.received) == [alice.email, bob.email]


def create_assigned(server: Server, creator: Account, assignee: Account, count: int) -> list[str]:
    """Create issues assigned to `assignee`; returns their issue_ids."""
    return [
        call(server, creator, "POST", "/api/", title=f"t{i}", assigned_to=assignee.id)["issue_id"]
        for i in range(count)
    ]


def test_kill_9_of_the_whole_server_loses_nothing_and_duplicates_nothing(instance, smtp, users):
    alice, bob, *_ = users
    with serve(instance, smtp) as server:
        issue_ids = create_assigned(server, alice, bob, 5)
        server.kill()
    last_due = max(email.due_at for email in outbox())
    wait_until(lambda: utcnow() > last_due, 10, "the emails to fall due while the server is down")
    assert smtp.received == []
    with serve(instance, smtp):
        wait_for_mail(smtp, 5)
    assert assigned(smtp) == Counter((issue_id, bob.email) for issue_id in issue_ids)


@pytest.mark.parametrize(
    ("outage", "error"),
    [("stopped", "Connection refused"), ("451 4.3.0 Try again later", "451 4.3.0 Try again later")],
)
def test_an_smtp_outage_is_retried_until_delivered_once(instance, smtp, users, outage, error):
    alice, bob, *_ = users
    if outage == "stopped":
        smtp.stop()
    else:
        smtp.refuse = outage
    with serve(instance, smtp) as server:
        issue_ids = create_assigned(server, alice, bob, 3)

        def failed_twice() -> bool:
            emails = outbox()
            return all(e.attempts >= 2 and e.state == "pending" for e in emails)

        wait_until(failed_twice, 30, "every email to fail twice")
        assert all(error in email.last_error for email in outbox())
        if outage == "stopped":
            smtp.start()
        smtp.refuse = None
        wait_for_mail(smtp, 3)
    assert assigned(smtp) == Counter((issue_id, bob.email) for issue_id in issue_ids)
    assert all(email.state == "sent" and email.attempts >= 2 for email in outbox())


def test_a_respawned_worker_takes_over_when_every_worker_is_killed(instance, smtp, users):
    alice, bob, *_ = users
    with serve(instance, smtp, SIT_ASSIGNMENT_EMAIL_DELAY="4s") as server:
        first_runner = server.runner()
        issue_ids = create_assigned(server, alice, bob, 4)
        workers = server.workers()
        assert first_runner in workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_for_mail(smtp, 4)
        assert server.runner() not in workers
    assert assigned(smtp) == Counter((issue_id, bob.email) for issue_id in issue_ids)
    assert max(lateness(smtp)) <= 5.0


def test_a_digest_of_many_users_goes_over_one_smtp_connection(instance, smtp, app):
    seeded = flask_cli(instance, "sit", "seed-demo", "--users", "300", "--issues", "3000")
    assert seeded.returncode == 0, seeded.stderr
    result = flask_cli(instance, "sit", "send-digest", **smtp.env)
    assert result.returncode == 0, result.stderr
    recipients = db.session.scalar(sa.select(sa.func.count(sa.distinct(Issue.assigned_to_id))))
    assert len(smtp.received) == recipients
    assert len({r.peer for r in smtp.received}) == 1
    assert len({r.to[0] for r in smtp.received}) == recipients
