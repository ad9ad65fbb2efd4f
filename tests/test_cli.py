"""`flask sit ...`: what each command does; bad input is one line on stderr, never a traceback."""

import re
import subprocess
from datetime import timedelta
from functools import partial
from subprocess import PIPE

import pytest
import sqlalchemy as sa
from helpers import PASSWORD, bearer, flask_cli, flask_command, wait_until, waiting_on
from sqlalchemy.pool import NullPool

from sit import clock, demo, scheduler
from sit.accounts import UsernameTaken
from sit.cli import create_first_user, create_user
from sit.extensions import db
from sit.models import Email, Issue, User


def count(model):
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def usernames():
    return set(db.session.scalars(sa.select(User.username)))


def one_error_line(exit_code, stderr):
    """The message of a command that failed as promised: non-zero exit, one line on stderr."""
    assert exit_code != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def failed(result):
    """The error line of a CliRunner result; the command raised nothing uncaught."""
    assert isinstance(result.exception, SystemExit), result.exception
    return one_error_line(result.exit_code, result.stderr)


def token_works(client, token):
    return client.get("/api/users/me/", headers={"Authorization": f"Bearer {token}"})


def get_token(client, username, password):
    return client.post("/get-token/", data={"username": username, "password": password})


def move_clock(monkeypatch, delta):
    later = clock.utcnow() + delta
    monkeypatch.setattr(clock, "utcnow", lambda: later)


def test_help_lists_every_command(runner):
    result = runner.invoke(args=["sit", "--help"])
    assert result.exit_code == 0
    for command in ("create-user", "first-user", "create-token", "revoke-tokens"):
        assert command in result.output
    assert "set-password" in result.output and "seed-demo" in result.output


# create-user


def test_create_user_with_password_option(runner, client):
    args = ["sit", "create-user", "carol", "--email", "carol@example.com", "--password", "s3cret"]
    result = runner.invoke(args=[*args, "--first-name", "Carol", "--last-name", "Danvers"])
    assert result.exit_code == 0, result.output
    assert "created user carol" in result.stdout
    carol = db.session.scalar(sa.select(User).where(User.username == "carol"))
    assert (carol.email, carol.first_name, carol.last_name) == (
        "carol@example.com",
        "Carol",
        "Danvers",
    )
    assert carol.password_hash != "s3cret"
    assert get_token(client, "carol", "s3cret").status_code == 200


def test_create_user_prompts_for_the_password_twice(runner, client):
    args = ["sit", "create-user", "carol", "--email", "carol@example.com"]
    result = runner.invoke(args=args, input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation" in result.output
    assert get_token(client, "carol", "s3cret").status_code == 200


def test_create_user_prompt_without_a_password_is_one_line(runner):
    args = ["sit", "create-user", "carol", "--email", "carol@example.com"]
    result = runner.invoke(args=args, input="one\nother\n")
    assert "password: none given" in failed(result)
    assert "carol" not in usernames()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice", "--email", "a@example.com", "--password", "pw"], "'alice' is taken"),
        (["carol", "--email", "not-an-email", "--password", "pw"], "email:"),
        (["carol", "--email", "c@example.com", "--password", ""], "password: may not be empty"),
        (["caro l", "--email", "c@example.com", "--password", "pw"], "username:"),
        (["", "--email", "c@example.com", "--password", "pw"], "username:"),
        (
            ["carol", "--email", "c@example.com", "--password", "pw", "--first-name", "x" * 151],
            "at most 150",
        ),
        (["carol", "--password", "pw"], "Missing option '--email'"),
        ([], "Missing argument 'USERNAME'"),
        (["carol", "--email", "c@example.com", "--bogus"], "No such option"),
    ],
    ids=[
        "taken",
        "email",
        "empty-password",
        "username",
        "no-username",
        "long-name",
        "no-email",
        "no-argument",
        "unknown-option",
    ],
)
def test_create_user_bad_input_is_one_line_and_writes_nothing(runner, alice, args, message):
    result = runner.invoke(args=["sit", "create-user", *args])
    assert message in failed(result)
    assert usernames() == {"alice"}
    assert alice.email == "alice@example.com"


def test_create_user_function_refuses_a_taken_username(app, alice):
    with pytest.raises(UsernameTaken, match="'alice' is taken"):
        create_user("alice", "other@example.com", "pw")
    assert count(User) == 1
    assert db.session.get(User, alice.id).email == "alice@example.com"


@pytest.mark.parametrize(("flag", "is_admin"), [([], False), (["--admin"], True)])
def test_create_user_makes_an_admin_with_admin_only(runner, client, flag, is_admin):
    args = ["sit", "create-user", "dave", "--email", "dave@example.com", "--password", "pw"]
    result = runner.invoke(args=[*args, *flag])
    assert result.exit_code == 0, result.output
    assert f"created {'admin' if is_admin else 'user'} dave" in result.stdout
    dave = db.session.scalar(sa.select(User).where(User.username == "dave"))
    assert (dave.is_admin, dave.active, dave.notify_assignments, dave.notify_digest) == (
        is_admin,
        True,
        True,
        True,
    )


# first-user


def test_first_user_creates_admin_once_with_a_printed_password(runner, client):
    result = runner.invoke(args=["sit", "first-user"])
    assert result.exit_code == 0, result.output
    password = re.search(r"admin / (\S+)", result.stdout)[1]
    token = get_token(client, "admin", password)
    assert token.status_code == 200
    assert token_works(client, token.json["token"]).json["is_admin"] is True

    again = runner.invoke(args=["sit", "first-user"])
    assert again.exit_code == 0
    assert again.output == ""
    assert usernames() == {"admin"}
    assert get_token(client, "admin", password).status_code == 200


def test_first_user_does_nothing_when_a_user_exists(runner, alice):
    result = runner.invoke(args=["sit", "first-user"])
    assert (result.exit_code, result.output) == (0, "")
    assert usernames() == {"alice"}
    assert create_first_user() is None


def test_first_user_passwords_are_random(app):
    first = create_first_user()
    db.session.execute(sa.delete(User))
    assert create_first_user() != first


def test_first_user_on_hosts_started_at_once_makes_one_admin(postgres_db, instance, app):
    other_host = sa.create_engine(postgres_db, poolclass=NullPool)
    try:
        with other_host.connect() as connection:
            admin = {"username": "admin", "email": "admin@localhost", "password_hash": "-"}
            connection.execute(sa.insert(User).values(admin))  # not committed yet
            command = flask_command(instance, "sit", "first-user")
            with subprocess.Popen(**command, stdout=PIPE, stderr=PIPE, text=True) as this_host:
                wait_until(partial(waiting_on, connection), 30, "the insert to wait")
                connection.commit()
                out, err = this_host.communicate(timeout=60)
        assert (this_host.returncode, out, err) == (0, "", "")
        assert usernames() == {"admin"}
    finally:
        other_host.dispose()


# create-token


def test_create_token_prints_a_token_that_authenticates(runner, client, alice):
    result = runner.invoke(args=["sit", "create-token", "alice"])
    assert result.exit_code == 0, result.output
    response = token_works(client, result.stdout.strip())
    assert response.status_code == 200
    assert response.json["username"] == "alice"


@pytest.mark.parametrize(
    ("option", "lifetime"),
    [
        ([], timedelta(days=7)),
        (["--expires-in", "30d"], timedelta(days=30)),
        (["--expires-in", "90"], timedelta(seconds=90)),
    ],
    ids=["TOKEN_MAX_AGE", "30d", "seconds"],
)
def test_create_token_lives_as_long_as_asked(runner, client, alice, monkeypatch, option, lifetime):
    token = runner.invoke(args=["sit", "create-token", "alice", *option]).stdout.strip()
    move_clock(monkeypatch, lifetime - timedelta(seconds=5))
    assert token_works(client, token).status_code == 200
    move_clock(monkeypatch, timedelta(seconds=10))
    response = token_works(client, token)
    assert response.status_code == 401
    assert "expired" in response.json["detail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice", "--expires-in", "30x"], "--expires-in: '30x' is not a duration"),
        (["alice", "--expires-in", "0"], "--expires-in: '0' must be at least one second"),
        (["alice", "--expires-in", "-5"], "--expires-in"),
        (["nobody"], "no user 'nobody'"),
        ([], "Missing argument 'USERNAME'"),
    ],
)
def test_create_token_bad_input_is_one_line(runner, alice, args, message):
    result = runner.invoke(args=["sit", "create-token", *args])
    assert message in failed(result)
    assert result.stdout == ""


# revoke-tokens and set-password


def test_revoke_tokens_stops_earlier_tokens(runner, client, alice):
    before = bearer(alice)
    result = runner.invoke(args=["sit", "revoke-tokens", "alice"])
    assert result.exit_code == 0, result.output
    response = client.get("/api/users/me/", headers=before)
    assert response.status_code == 401
    assert "revoked" in response.json["detail"]
    assert client.get("/api/users/me/", headers=bearer(alice)).status_code == 200
    assert get_token(client, "alice", PASSWORD).status_code == 200


@pytest.mark.parametrize(
    ("via", "input"),
    [(["--password", "new secret"], None), ([], "new secret\nnew secret\n")],
    ids=["option", "prompt"],
)
def test_set_password_stops_old_tokens_and_the_new_password_works(
    runner, client, alice, via, input
):
    before = bearer(alice)
    result = runner.invoke(args=["sit", "set-password", "alice", *via], input=input)
    assert result.exit_code == 0, result.output
    assert client.get("/api/users/me/", headers=before).status_code == 401
    assert get_token(client, "alice", PASSWORD).status_code == 401
    response = get_token(client, "alice", "new secret")
    assert response.status_code == 200
    assert token_works(client, response.json["token"]).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["revoke-tokens", "nobody"], "no user 'nobody'"),
        (["revoke-tokens"], "Missing argument 'USERNAME'"),
        (["set-password", "nobody", "--password", "pw"], "no user 'nobody'"),
        (["set-password", "alice", "--password", ""], "password: may not be empty"),
        (["set-password"], "Missing argument 'USERNAME'"),
    ],
)
def test_revoke_and_set_password_bad_input_is_one_line_and_changes_nothing(
    runner, client, alice, args, message
):
    before = bearer(alice)
    result = runner.invoke(args=["sit", *args])
    assert message in failed(result)
    assert client.get("/api/users/me/", headers=before).status_code == 200
    assert get_token(client, "alice", PASSWORD).status_code == 200


# seed-demo


def test_seed_demo_adds_users_and_issues_among_them(runner, client):
    args = ["sit", "seed-demo", "--users", "50", "--issues", "500", "--password", "demo"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "added 50 users" in result.stdout and "500 issues" in result.stdout
    assert usernames() == {f"demo{n}" for n in range(1, 51)}
    assert count(Issue) == 500
    demo_ids = set(db.session.scalars(sa.select(User.id)))
    issues = db.session.scalars(sa.select(Issue)).all()
    assigned = {issue.assigned_to_id for issue in issues} - {None}
    assert assigned <= demo_ids and len(assigned) > 10
    assert {issue.created_by_id for issue in issues} <= demo_ids
    assert {issue.status for issue in issues} == {"O", "C"}
    assert all(re.fullmatch(r"[0-9a-f]{12}", issue.issue_id) for issue in issues)
    assert len({issue.issue_id for issue in issues}) == 500

    token = get_token(client, "demo7", "demo").json["token"]
    response = client.get("/api/?per_page=30", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert len(response.json) == 30


def test_seed_demo_without_password_prints_a_random_one(runner, client):
    result = runner.invoke(args=["sit", "seed-demo", "--users", "2", "--issues", "0"])
    assert result.exit_code == 0, result.output
    password = re.search(r"password (\S+)\)", result.stdout)[1]
    assert get_token(client, "demo2", password).status_code == 200
    assert count(Issue) == 0


def test_seed_demo_twice_is_an_error_that_changes_nothing(runner):
    args = ["sit", "seed-demo", "--users", "5", "--issues", "20", "--password", "demo"]
    assert runner.invoke(args=args).exit_code == 0
    hashes = set(db.session.scalars(sa.select(User.password_hash)))
    again = runner.invoke(args=["sit", "seed-demo", "--users", "8", "--issues", "20"])
    assert "'demo1' exists already" in failed(again)
    assert (count(User), count(Issue)) == (5, 20)
    assert set(db.session.scalars(sa.select(User.password_hash))) == hashes


def test_seed_demo_minds_only_its_own_usernames(runner, alice):
    create_user("demolition", "d@example.com", "pw")
    create_user("demo9", "d9@example.com", "pw")
    result = runner.invoke(args=["sit", "seed-demo", "--users", "3", "--issues", "4"])
    assert result.exit_code == 0, result.output
    assert count(User) == 6


def test_seed_function_reports_progress_and_commits_once(app):
    steps = []
    demo.seed(users=7, issues=demo.CHUNK + 1, password="pw", progress=steps.append)
    assert sum(steps) == 7 + demo.CHUNK + 1 and len(steps) == 3
    db.session.rollback()  # nothing pending: the seed committed
    assert (count(User), count(Issue)) == (7, demo.CHUNK + 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0", "--issues", "5"], "'--users': 0 is not in the range"),
        (["--users", "many", "--issues", "5"], "'--users'"),
        (["--users", "5", "--issues", "-1"], "'--issues'"),
        (["--users", "5"], "Missing option '--issues'"),
        (["--issues", "5"], "Missing option '--users'"),
        (["--users", "5", "--issues", "5", "--password", ""], "password: may not be empty"),
    ],
)
def test_seed_demo_bad_input_is_one_line_and_writes_nothing(runner, alice, args, message):
    result = runner.invoke(args=["sit", "seed-demo", *args])
    assert message in failed(result)
    assert result.stdout == ""
    assert (count(User), count(Issue)) == (1, 0)


# as a user runs them: a real `flask` process


def test_commands_in_a_real_process(instance, client):
    create = flask_cli(
        instance, "sit", "create-user", "dave", "--email", "d@example.com", "--password", "pw"
    )
    assert create.returncode == 0, create.stderr
    token = flask_cli(instance, "sit", "create-token", "dave", "--expires-in", "30d")
    assert token.returncode == 0, token.stderr
    assert token_works(client, token.stdout.strip()).json["username"] == "dave"
    seed = flask_cli(instance, "sit", "seed-demo", "--users", "3", "--issues", "10")
    assert seed.returncode == 0, seed.stderr
    assert "Traceback" not in seed.stderr
    assert (count(User), count(Issue)) == (4, 10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-user", "alice", "--email", "a@b.c", "--password", "pw"], "'alice' is taken"),
        (["create-user", "carol", "--email", "c@b.c"], "password: none given"),  # empty stdin
        (["create-user", "carol", "--password", "pw"], "Missing option '--email'"),
        (["revoke-tokens"], "Missing argument 'USERNAME'"),
        (["create-token", "alice", "--expires-in", "soon"], "'soon' is not a duration"),
        (["seed-demo", "--users", "0", "--issues", "1"], "'--users': 0 is not in the range"),
        (["--bogus"], "No such option '--bogus'"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
    ids=[
        "taken",
        "no-password",
        "no-email",
        "no-username",
        "bad-duration",
        "no-users",
        "option",
        "command",
    ],
)
def test_bad_input_in_a_real_process_is_one_line(instance, alice, args, message):
    result = flask_cli(instance, "sit", *args)
    assert message in one_error_line(result.returncode, result.stderr)
    assert usernames() == {"alice"}


@pytest.mark.parametrize(
    ("key", "value"), [("TOKEN_MAX_AGE", "soon"), ("MAIL_CA_FILE", "/nowhere/ca.pem")]
)
def test_bad_configuration_is_one_line_naming_the_key(instance, key, value):
    result = flask_cli(instance, "sit", "first-user", **{f"SIT_{key}": value})
    assert one_error_line(result.returncode, result.stderr).startswith(f"Error: {key}: ")


@pytest.mark.parametrize(
    "args",
    [
        ["first-user"],
        ["create-token", "alice"],
        ["set-password", "alice", "--password", "pw"],
        ["seed-demo", "--users", "2", "--issues", "2"],
    ],
    ids=lambda args: args[0],
)
def test_a_database_never_migrated_is_one_line(tmp_path, args):
    result = flask_cli(tmp_path, "sit", *args)
    assert "flask db upgrade" in one_error_line(result.returncode, result.stderr)


def test_flask_db_upgrade_migrates_a_new_database(tmp_path):
    """`make run`'s first steps: the `flask` command's app keeps `flask db` (see `create_app`)."""
    upgrade = flask_cli(tmp_path, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert "(head)" in flask_cli(tmp_path, "db", "current").stdout
    first_user = flask_cli(tmp_path, "sit", "first-user")
    assert "created the first user: admin" in first_user.stdout, first_user.stderr


# send-digest, outbox and jobs

OUTBOX = ("id", "kind", "state", "due/sent (UTC)", "recipient", "attempts", "last error", "subject")
JOBS = ("job", "next run (UTC)", "what")


def table(result, titles):
    """A printed table's rows, as dicts cut where the header's titles start."""
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    starts = [header.index(title) for title in titles]
    cuts = list(zip(starts, [*starts[1:], None], strict=True))
    return [
        {t: line[a:b].strip() for t, (a, b) in zip(titles, cuts, strict=True)} for line in lines
    ]


def outbox(runner, *args):
    return table(runner.invoke(args=["sit", "outbox", *args]), OUTBOX)


def scheduled_jobs(runner):
    return {row["job"]: row for row in table(runner.invoke(args=["sit", "jobs"]), JOBS)}


def test_send_digest_without_a_server_sends_one_digest_per_user_with_issues(
    runner, mail_to_sink, new_issue, alice, bob
):
    create_user("carol", "carol@example.com", "pw")
    new_issue()
    new_issue()
    new_issue(assigned_to=alice.id)
    result = runner.invoke(args=["sit", "send-digest"])
    assert result.exit_code == 0, result.output
    assert "queued 2 digests; sent 2 emails" in result.stdout
    received = sorted((r.to[0], r.subject) for r in mail_to_sink.received)
    assert received == [
        ("alice@example.com", "Your SIT digest: 1 issues assigned to you"),
        ("bob@example.com", "Your SIT digest: 2 issues assigned to you"),
    ]
    assert len({r.peer for r in mail_to_sink.received}) == 1
    assert scheduler.get().lock.acquire(blocking=False)  # the command let go of the lock


def test_send_digest_while_a_server_holds_the_lock_hands_the_run_to_it(
    app, runner, mail_to_sink, new_issue
):
    new_issue()
    server = scheduler.runner_lock(app)
    assert server.acquire(blocking=False)
    try:
        result = runner.invoke(args=["sit", "send-digest"])
    finally:
        server.release()
    assert result.exit_code == 0, result.output
    assert "a running server holds the runner lock" in result.stdout
    assert mail_to_sink.received == []
    assert "digest-now" in scheduled_jobs(runner)


def test_outbox_lists_emails_newest_first_and_filters_by_state(
    runner, client, as_alice, alice, new_issue
):
    issue = new_issue()
    client.patch(f"/api/{issue['id']}/", json={"assigned_to": alice.id}, headers=as_alice)
    to_bob, to_alice = db.session.scalars(sa.select(Email).order_by(Email.id))
    to_alice.mark_failed_attempt("451 4.3.0 Try again later", clock.utcnow(), 30, 86400)
    db.session.commit()
    rows = outbox(runner)
    assert [row["id"] for row in rows] == [str(to_alice.id), str(to_bob.id)]
    assert rows[0] == {
        "id": str(to_alice.id),
        "kind": "assignment",
        "state": "pending",
        "due/sent (UTC)": to_alice.due_at.strftime("%Y-%m-%d %H:%M:%S"),
        "recipient": "alice@example.com",
        "attempts": "1",
        "last error": "451 4.3.0 Try again later",
        "subject": to_alice.subject,
    }
    assert (rows[1]["state"], rows[1]["attempts"], rows[1]["last error"]) == ("cancelled", "0", "")
    assert [row["id"] for row in outbox(runner, "--state", "cancelled")] == [str(to_bob.id)]
    assert outbox(runner, "--state", "sent") == []


def test_outbox_bad_state_is_one_line(runner):
    result = runner.invoke(args=["sit", "outbox", "--state", "lost"])
    assert "Invalid value for '--state'" in failed(result)


def test_jobs_lists_each_email_job_with_its_next_run(runner, new_issue, alice):
    new_issue()
    new_issue(assigned_to=alice.id)
    jobs = scheduled_jobs(runner)
    emails = db.session.scalars(sa.select(Email)).all()
    assert set(jobs) == {f"email-{email.id}" for email in emails}
    for email in emails:
        job = jobs[f"email-{email.id}"]
        assert job["next run (UTC)"] == email.due_at.strftime("%Y-%m-%d %H:%M:%S")
        assert job["what"] == f"email {email.id} to {email.to_address}"
