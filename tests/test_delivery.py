"""Email delivery for real: gunicorn with 4 workers, an SMTP server on loopback, kills and outages.

Delays are seconds, set through the same `SIT_*` keys users set; every wait has a deadline.
"""

import os
import re
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from helpers import (
    Server,
    SmtpSink,
    bearer,
    flask_cli,
    gunicorn,
    outbox,
    wait_until,
)

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


def assign_and_reassign(servers: list[Server], users: list[Account]) -> Counter[tuple[str, str]]:
    """Create 24 issues, then reassign, unassign, delete, edit and replace some of them, the
    requests spread over `servers` in turn; returns the assignment emails due: (issue_id, to)."""
    alice, *assignees = users
    pick = dict(enumerate(servers * 24))

    def create(i: int) -> dict[str, Any]:
        return call(pick[i], alice, "POST", "/api/", title=f"#{i}", assigned_to=assignees[i % 3].id)

    def change(i: int, method: str, body: dict[str, Any]) -> dict[str, Any]:
        return call(pick[i + 1], alice, method, f"/api/{created[i]['id']}/", **body)

    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(create, range(24)))
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
        list(pool.map(lambda c: change(*c), changes))
    return expected


def assert_sent_once_on_time(smtp: SmtpSink, expected: Counter[tuple[str, str]]) -> None:
    """Exactly the expected assignment emails arrived, once each, none early, p99 ≤ 1 s late;
    the superseded ones (7 in `assign_and_reassign`) were cancelled."""
    wait_for_mail(smtp, sum(expected.values()))
    assert assigned(smtp) == expected
    late = lateness(smtp)
    assert min(late) >= 0, "an email arrived before it was due"
    assert p99(late) <= 1.0, sorted(late)
    states = Counter(email.state for email in outbox())
    assert states == {"sent": sum(expected.values()), "cancelled": 7}


def test_assignment_emails_arrive_once_on_time_and_superseded_ones_never(instance, smtp, users):
    with serve(instance, smtp) as server:
        expected = assign_and_reassign([server], users)
        assert_sent_once_on_time(smtp, expected)


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


def give_digests_to(users: list[Account]) -> None:
    """Issues for alice's digest (one closed, two open) and bob's (one); none for carol."""
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


def assert_digest_runs(smtp: SmtpSink, users: list[Account], interval: float) -> None:
    """Three runs at least, `interval` apart, each one digest for alice and one for bob."""
    alice, bob, carol, _ = users
    wait_until(lambda: len(smtp.to(alice.email)) >= 3, 30, "three digests for alice")
    runs = digest_runs()
    assert set(runs.values()) == {1}, "a user got two digests in one run"
    times = sorted({run for run, _ in runs})
    assert all((b - a).total_seconds() >= interval - 0.1 for a, b in pairwise(times)), times
    assert {to for _, to in runs} == {alice.email, bob.email}
    assert smtp.to(carol.email) == []
    assert len(smtp.received) == len({r.message["Message-ID"] for r in smtp.received})
    digest = smtp.to(alice.email)[-1]
    assert digest.subject == "Your SIT digest: 3 issues assigned to you"
    text = digest.part("plain")
    assert text.index("newer open") < text.index("older open") < text.index("closed")


def test_digests_one_per_user_with_issues_per_interval_over_four_workers(instance, smtp, users):
    give_digests_to(users)
    with serve(instance, smtp, SIT_DIGEST_INTERVAL="2s"):
        assert_digest_runs(smtp, users, 2)


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


# Comment emails

COMMENT_DELAY = 4  # SIT_COMMENT_EMAIL_DELAY, seconds: every burst below fits in it


def told(smtp: SmtpSink, user: Account) -> list[list[str]]:
    """The comments each comment email to the user told, in order (each is one `said` line)."""
    emails = [r for r in smtp.to(user.email) if r.subject.startswith("Re: [SIT #")]
    return [
        [line for line in r.part("plain").splitlines() if line.startswith("said")] for r in emails
    ]


def comment(server: Server, author: Account, issue: dict[str, Any], body: str) -> dict[str, Any]:
    return call(server, author, "POST", f"/api/{issue['id']}/comments/", body=body)


def test_a_burst_of_comments_is_one_email_per_watcher_in_order_and_a_deleted_one_is_not_in_it(
    instance, smtp, users
):
    alice, bob, carol, dave = users
    with serve(instance, smtp, SIT_COMMENT_EMAIL_DELAY=f"{COMMENT_DELAY}s") as server:
        issue = call(server, alice, "POST", "/api/", title="Burst", assigned_to=bob.id)
        call(server, dave, "PUT", f"/api/{issue['id']}/subscription")
        started = time.monotonic()
        for n, author in enumerate([alice, carol, alice, carol, alice], 1):
            comment(server, author, issue, f"said {n}")
        typo = comment(server, alice, issue, "said oops")
        call(server, alice, "DELETE", f"/api/{issue['id']}/comments/{typo['id']}/")
        assert time.monotonic() - started < COMMENT_DELAY, "the burst did not fit in the window"
        wait_until(lambda: all(told(smtp, user) for user in users), 30, "every comment email")
        wait_until(settled, 30, "the outbox to settle")
    burst = [f"said {n}" for n in range(1, 6)]
    assert told(smtp, bob) == told(smtp, dave) == [burst]  # the assignee, a subscriber
    assert told(smtp, alice) == [["said 2", "said 4"]]  # not her own
    assert told(smtp, carol) == [["said 3", "said 5"]]  # watching from her first comment on
    for n, received in enumerate(smtp.to(bob.email)):  # the assignment email and the comments'
        (instance / f"thread-{n}.eml").write_bytes(received.raw)  # for the README's example
        assert f"In-Reply-To: <issue.{issue['issue_id']}@".encode() in received.raw


def test_kill_9_of_the_runner_inside_the_window_loses_no_comment_and_sends_none_twice(
    instance, smtp, users
):
    alice, bob, carol, _ = users
    with serve(instance, smtp, SIT_COMMENT_EMAIL_DELAY=f"{COMMENT_DELAY}s") as server:
        runner = server.runner()
        issue = call(server, alice, "POST", "/api/", title="Killed", assigned_to=bob.id)
        for n, author in enumerate([alice, carol, alice], 1):
            comment(server, author, issue, f"said {n}")
        os.kill(runner, signal.SIGKILL)
        for n, author in enumerate([carol, alice], 4):
            comment(server, author, issue, f"said {n}")
        wait_until(lambda: server.elected() not in (None, runner), 30, "another runner")
        wait_until(lambda: all(told(smtp, user) for user in users[:3]), 30, "the comment emails")
        wait_until(settled, 30, "the outbox to settle")
    assert told(smtp, bob) == [[f"said {n}" for n in range(1, 6)]]
    assert told(smtp, alice) == [["said 2", "said 4"]]
    assert told(smtp, carol) == [["said 3", "said 5"]]


def test_a_digest_of_many_users_goes_over_one_smtp_connection(instance, smtp, app):
    seeded = flask_cli(instance, "sit", "seed-demo", "--users", "300", "--issues", "3000")
    assert seeded.returncode == 0, seeded.stderr
    result = flask_cli(instance, "sit", "send-digest", **smtp.env)
    assert result.returncode == 0, result.stderr
    recipients = db.session.scalar(sa.select(sa.func.count(sa.distinct(Issue.assigned_to_id))))
    assert len(smtp.received) == recipients
    assert len({r.peer for r in smtp.received}) == 1
    assert len({r.to[0] for r in smtp.received}) == recipients


# Several hosts: gunicorn masters of 2 workers each, sharing one PostgreSQL database and nothing
# on disk (each host its own instance folder and temp dir). These run on PostgreSQL in the SQLite
# run too: `hosts` asks for `postgres_db` before `users` builds the app.

SECRET_KEY = "the SECRET_KEY every host shares"


@pytest.fixture
def hosts(postgres_db: str, tmp_path: Path, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch):
    """`hosts(name, **env)`: serve SIT as host `name` (again, after a kill, with the same name)."""
    monkeypatch.setenv("SIT_SECRET_KEY", SECRET_KEY)  # the hosts' and this test's tokens

    def host(name: str, **env: str) -> AbstractContextManager[Server]:
        home = tmp_path / "hosts" / name
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        (home / "instance").mkdir(exist_ok=True)
        settings = {"SIT_ASSIGNMENT_EMAIL_DELAY": f"{DELAY}s", "TMPDIR": str(home / "tmp")}
        return gunicorn(home / "instance", 2, **smtp.env, **settings | env)

    return host


def runs_jobs(server: Server) -> bool:
    """Whether one of the server's live workers said it runs the jobs."""
    return server.elected() in server.workers()


def the_runner(*servers: Server) -> Server:
    """The one server, of several sharing a database, whose worker runs the jobs."""
    runners = wait_until(lambda: [s for s in servers if runs_jobs(s)], 10, "a runner")
    assert len(runners) == 1, "two hosts run jobs"
    return runners[0]


def test_two_hosts_send_each_email_once_and_superseded_ones_never(hosts, smtp, users):
    with hosts("a") as a, hosts("b") as b:
        the_runner(a, b)
        expected = assign_and_reassign([a, b], users)
        assert_sent_once_on_time(smtp, expected)
        the_runner(a, b)


def test_an_email_due_at_once_is_sent_within_a_second_by_the_runner_on_another_host(
    hosts, smtp, users
):
    alice, bob, *_ = users
    now = {"SIT_ASSIGNMENT_EMAIL_DELAY": "0s"}
    with hosts("a", **now) as a, hosts("b", **now) as b:
        elsewhere = b if the_runner(a, b) is a else a
        for count in range(1, 11):  # each job is due as it is stored: no time to notice it early
            create_assigned(elsewhere, alice, bob, 1)
            wait_for_mail(smtp, count)
    late = lateness(smtp)
    assert min(late) >= 0
    assert p99(late) <= 1.0, sorted(late)


def test_two_hosts_send_one_digest_per_user_per_interval(hosts, smtp, users):
    give_digests_to(users)
    with hosts("a", SIT_DIGEST_INTERVAL="2s") as a, hosts("b", SIT_DIGEST_INTERVAL="2s") as b:
        assert_digest_runs(smtp, users, 2)
        the_runner(a, b)


def test_the_survivor_of_a_killed_host_sends_every_pending_email_once(hosts, smtp, users):
    alice, bob, *_ = users
    expected: Counter[tuple[str, str]] = Counter()

    def kill_with_emails_pending(victim: Server, survivor: Server) -> None:
        for server in (victim, survivor, victim, survivor):
            for issue_id in create_assigned(server, alice, bob, 2):
                expected[(issue_id, bob.email)] += 1
        assert any(email.state == "pending" for email in outbox())
        victim.kill()
        killed = time.monotonic()
        wait_until(lambda: runs_jobs(survivor), 5, "the survivor to take over")
        print(f"{survivor.log.parent.parent.name} took over in {time.monotonic() - killed:.3f} s")
        wait_for_mail(smtp, sum(expected.values()))
        for issue_id in create_assigned(survivor, alice, bob, 1):  # and it keeps serving
            expected[(issue_id, bob.email)] += 1
        wait_for_mail(smtp, sum(expected.values()))

    with hosts("a") as a, hosts("b") as b:
        first = the_runner(a, b)
        second = b if first is a else a
        kill_with_emails_pending(first, second)
        with hosts("a" if first is a else "b") as back:
            kill_with_emails_pending(second, back)

    assert assigned(smtp) == expected
    late = lateness(smtp)
    assert min(late) >= 0
    assert max(late) <= 5.0, sorted(late)


def test_a_host_with_the_scheduler_disabled_never_runs_jobs(hosts, smtp, users):
    alice, bob, *_ = users
    with hosts("a") as a, hosts("b", SIT_SCHEDULER_ENABLED="false") as b:
        assert the_runner(a, b) is a
        issue_ids = create_assigned(b, alice, bob, 2)
        a.kill()
        last_due = max(email.due_at for email in outbox())
        wait_until(lambda: utcnow() > last_due + timedelta(seconds=2), 10, "the emails to be due")
        assert smtp.received == []
        assert not runs_jobs(b)
        create_assigned(b, alice, bob, 1)  # b serves on
        with hosts("a"):
            wait_for_mail(smtp, 3)
    assert set(assigned(smtp)) >= {(issue_id, bob.email) for issue_id in issue_ids}
