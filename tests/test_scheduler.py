"""The scheduler: the runner lock, the digest job across restarts, who runs jobs."""

import logging
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.base import STATE_RUNNING
from helpers import wait_until

from sit import scheduler
from sit.extensions import db
from sit.scheduler import AdvisoryLock, FileLock, RunnerLock

HOLD_LOCK = """
import sys, time
from pathlib import Path
import sqlalchemy as sa
from sit.scheduler import AdvisoryLock, FileLock
kind, where = sys.argv[1:]
lock = FileLock(Path(where)) if kind == "file" else AdvisoryLock(sa.make_url(where))
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def make_lock(kind: str, where: str) -> RunnerLock:
    return FileLock(Path(where)) if kind == "file" else AdvisoryLock(sa.make_url(where))


@pytest.fixture(params=["file", "advisory"])
def lock_at(request, tmp_path) -> tuple[str, str]:
    """A runner lock's kind and place: a file, or a PostgreSQL database."""
    if request.param == "file":
        return "file", str(tmp_path / "scheduler.lock")
    return "advisory", request.getfixturevalue("postgres_db")


def held_elsewhere(lock: RunnerLock) -> bool:
    """Whether another process (or, for the advisory lock, another connection) holds `lock`."""
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def test_a_runner_lock_has_one_holder_and_passes_on_when_it_is_killed(lock_at):
    command = [sys.executable, "-c", HOLD_LOCK, *lock_at]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline() == "held\n"
        assert held_elsewhere(make_lock(*lock_at))
        waiting = make_lock(*lock_at)
        taken = threading.Event()
        threading.Thread(target=lambda: waiting.acquire() and taken.set(), daemon=True).start()
        assert not taken.wait(0.2), "two holders at once"
        holder.send_signal(signal.SIGKILL)
        assert taken.wait(5), "the lock was not passed on when its holder died"
        assert waiting.held()
        assert held_elsewhere(make_lock(*lock_at))
        waiting.release()
        assert not held_elsewhere(make_lock(*lock_at))


def digest_job_next_run() -> datetime:
    return scheduler.get().aps.get_job("digest").next_run_time


def test_the_digest_job_is_created_once_and_a_restart_does_not_postpone_it(app):
    runner = scheduler.get()
    runner.start()
    before = datetime.now(UTC)
    runner.ensure_digest_job()
    first = digest_job_next_run()
    assert first - before >= timedelta(seconds=app.config["DIGEST_INTERVAL"])
    runner.ensure_digest_job()  # as at the next start
    assert digest_job_next_run() == first
    due = datetime.now(UTC) - timedelta(hours=1)  # fell due while the server was down
    runner.aps.modify_job("digest", next_run_time=due)
    runner.ensure_digest_job()
    assert digest_job_next_run() == due


def test_a_changed_digest_interval_applies_from_the_next_start(app):
    runner = scheduler.get()
    runner.start()
    runner.ensure_digest_job()  # 24 hours
    app.config["DIGEST_INTERVAL"] = 10
    runner.ensure_digest_job()
    job = runner.aps.get_job("digest")
    assert job.trigger.interval == timedelta(seconds=10)
    assert job.next_run_time - datetime.now(UTC) <= timedelta(seconds=10)


def stored_job_ids() -> set[str]:
    return set(db.session.scalars(sa.text("SELECT id FROM apscheduler_jobs")))


def test_a_process_that_does_not_run_jobs_still_stores_them(client, as_alice, bob):
    response = client.post("/api/", json={"title": "t", "assigned_to": bob.id}, headers=as_alice)
    assert response.status_code == 201
    assert stored_job_ids() == {"email-1"}
    assert scheduler.get().aps.state != STATE_RUNNING  # written to the store, never run


@pytest.mark.parametrize("enabled", [True, False])
def test_only_an_enabled_process_stands_by_for_the_runner_lock(app, enabled):
    app.config["SCHEDULER_ENABLED"] = enabled
    runner = scheduler.get()
    runner.stand_by()
    other = scheduler.runner_lock(app)
    if enabled:
        wait_until(lambda: held_elsewhere(other), 5, "the runner to take the lock")
        wait_until(lambda: "digest" in stored_job_ids(), 5, "the runner to add the digest job")
    else:
        assert not held_elsewhere(other)
        assert "digest" not in stored_job_ids()


def advisory_lock_holders() -> list[int]:
    """The server process ids of the sessions holding an advisory lock in this database."""
    db.session.rollback()
    query = """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
    return list(db.session.scalars(sa.text(query)))


def test_a_runner_whose_lock_connection_is_cut_steps_down_and_stands_by_again(
    postgres_db, app, caplog
):
    runner = scheduler.get()
    runner.stand_by()
    [first] = wait_until(advisory_lock_holders, 5, "the runner to take the lock")
    db.session.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    wait_until(lambda: "no longer runs SIT's jobs" in caplog.text, 5, "the runner to step down")
    [second] = wait_until(advisory_lock_holders, 5, "the runner to take the lock again")
    assert second != first
    wait_until(lambda: runner.aps.state == STATE_RUNNING, 5, "the runner to run jobs again")
    assert runner.aps.get_job("sweep", jobstore="local") is not None


def test_a_runner_that_cannot_stand_by_says_why_and_tries_again_later(app, tmp_path, caplog):
    """Its lock file's folder is gone: each failed round is one line naming the reason, the
    next one comes later each time, and once the folder is back the runner takes over."""
    runner = scheduler.get()
    folder = tmp_path / "gone"
    runner.lock = FileLock(folder / "scheduler.lock")
    runner.stand_by()

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "cannot run SIT's jobs" in r.getMessage()]

    wait_until(lambda: len(failures()) >= 2, 5, "the runner to fail twice")
    first, second = failures()[:2]
    assert "FileNotFoundError" in first.getMessage() and "scheduler.lock" in first.getMessage()
    assert first.getMessage().endswith("trying again in 1 s")
    assert second.getMessage().endswith("trying again in 2 s")
    assert not first.exc_info and not second.exc_info  # one line, no traceback
    folder.mkdir()
    wait_until(lambda: "now runs SIT's jobs" in caplog.text, 10, "the runner to take over")
    assert runner.aps.state == STATE_RUNNING
