"""SIT started as an operator starts it: configured only by `SIT_*` variables, its instance
folder not made yet, its database elsewhere, and its processes started in any order."""

import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from helpers import PASSWORD, cli_create_user, flask_cli, gunicorn, migrate, signed_in, wait_until
from sqlalchemy.pool import NullPool

EMAIL_DEADLINE = 60  # seconds; the runner's back-off is 30 s at most


def operator_env(database: str) -> dict[str, str]:
    """Every setting an operator gives, as environment variables: nothing in any file."""
    return {
        "SIT_SECRET_KEY": "an operator's secret",
        "SIT_SQLALCHEMY_DATABASE_URI": database,
        "SIT_ASSIGNMENT_EMAIL_DELAY": "0s",
    }


@pytest.fixture
def instance_path(tmp_path: Path) -> Path:
    """Where SIT_INSTANCE_PATH points: a folder nobody has made."""
    path = tmp_path / "var" / "lib" / "sit"
    assert not path.parent.exists()
    return path


def assignment_emails(instance: Path, address: str) -> list[str]:
    """The subjects of the `.eml` files sent to `address`."""
    subjects = []
    for path in (instance / "outbox").glob("*.eml"):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        if message["To"] == address:
            subjects.append(message["Subject"])
    return subjects


def assign_an_issue(url: str, instance: Path, env: dict[str, str]) -> None:
    """Users made by the command line, a token, an issue assigned to bob; then bob's email."""
    cli_create_user(instance, "alice", **env)
    bob = cli_create_user(instance, "bob", **env)
    body = {"title": "Printer on fire", "assigned_to": bob}
    created = requests.post(f"{url}/api/", json=body, headers=signed_in(url, "alice"), timeout=30)
    assert created.status_code == 201, created.text
    subjects = wait_until(
        lambda: assignment_emails(instance, "bob@example.com"), EMAIL_DEADLINE, "bob's email"
    )
    assert len(subjects) == 1 and "Printer on fire" in subjects[0], subjects


def tables(database: str) -> list[str]:
    engine = sa.create_engine(database, poolclass=NullPool)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@contextmanager
def watching_health(url: str) -> Iterator[list[str]]:
    """Ask `/healthz` every 0.1 s meanwhile; yields the answers that were not JSON from SIT (a
    refused connection, a 500)."""
    wrong: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            try:
                answer = requests.get(f"{url}/healthz", timeout=5)
                if answer.status_code not in (200, 503) or "status" not in answer.json():
                    wrong.append(f"{answer.status_code} {answer.text}")
            except requests.RequestException as error:
                wrong.append(repr(error))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield wrong
    finally:
        done.set()
        watcher.join()


def test_configured_only_by_the_environment_it_makes_its_folder_and_sends_email(
    tmp_path: Path, instance_path: Path, migrated_database: str
) -> None:
    env = operator_env(migrated_database)
    log = tmp_path / "gunicorn.log"
    with gunicorn(instance_path, workers=2, log=str(log), **env) as server:
        assert stat.S_IMODE(instance_path.stat().st_mode) == 0o700
        assign_an_issue(server.url, instance_path, env)
    assert not (instance_path / "secret_key").exists()  # the key came from the environment
    assert "Traceback" not in log.read_text()


def test_a_server_started_before_the_migrations_serves_once_they_ran(
    tmp_path: Path, instance_path: Path, empty_database: str
) -> None:
    env = operator_env(empty_database)
    log = tmp_path / "gunicorn.log"
    with (
        gunicorn(instance_path, workers=2, log=str(log), **env) as server,
        watching_health(server.url) as wrong_health_answers,
    ):
        form = {"username": "alice", "password": PASSWORD}
        early = requests.post(f"{server.url}/get-token/", data=form, timeout=30)
        assert early.status_code == 503, early.text
        assert early.headers["Content-Type"] == "application/problem+json"
        assert "flask db upgrade" in early.json()["detail"]
        wait_until(
            lambda: "not migrated yet" in log.read_text(), 15, "the runner to say why it waits"
        )
        assert tables(empty_database) == []  # the workers made none: the migration races no one

        upgraded = flask_cli(instance_path, "db", "upgrade", **env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "Traceback" not in upgraded.stderr

        assign_an_issue(server.url, instance_path, env)
    assert wrong_health_answers == []
    text = log.read_text()
    assert "Traceback" not in text  # the runner's reasons are one line each
    assert "cannot run SIT's jobs: the database is not migrated yet" in text


def test_the_migration_keeps_the_job_table_workers_of_earlier_releases_made(
    tmp_path: Path, empty_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before this release, a worker started before `flask db upgrade` made `apscheduler_jobs`
    itself (APScheduler's own job store does) and stored jobs in it."""
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(tmp_path / "instance"))
    engine = sa.create_engine(empty_database, poolclass=NullPool)
    store = SQLAlchemyJobStore(engine=engine)
    store.start(None, "default")  # creates its table, as an earlier release's workers did
    with engine.begin() as connection:
        connection.execute(store.jobs_t.insert(), {"id": "kept", "job_state": b"state"})

    migrate(empty_database)

    with engine.connect() as connection:
        assert connection.scalar(sa.text("SELECT id FROM apscheduler_jobs")) == "kept"
    assert sa.inspect(engine).has_table("outbox")  # the rest of 0002 applied
