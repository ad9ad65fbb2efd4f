"""The scheduler: the runner lock, the digest job across restarts, who runs jobs."""

import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import wait_until

from sit import scheduler
from sit.extensions import db
from sit.scheduler import FileLock

HOLD_LOCK = """
import sys, time
from pathlib import Path
from sit.scheduler import FileLock
lock = FileLock(Path(sys.argv[1]))  # kept: the lock lives as long as its file
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_the_file_lock_has_one_holder_and_passes_on_when_it_is_killed(tmp_path):
    path = tmp_path / "scheduler.lock"
    command = [sys.executable, "-c", HOLD_LOCK, str(path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline() == "held\n"
        assert FileLock(path).acquire(blocking=False) is False
        waiting = FileLock(path)
        taken = threading.Event()
        threading.Thread(target=lambda: waiting.acquire() and taken.set(), daemon=True).start()
        assert not taken.wait(0.2), "two holders at once"
        holder.send_signal(signal.SIGKILL)
        assert taken.wait(5), "the lock was not passed on when its holder died"
        assert FileLock(path).acquire(blocking=False) is False
        waiting.release()
        assert not held_elsewhere(path)


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
    assert scheduler.get().aps.state == 2  # STATE_PAUSED: written to the store, never run


def held_elsewhere(path: Path) -> bool:
    lock = FileLock(path)
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


@pytest.mark.parametrize("enabled", [True, False])
def test_only_an_enabled_process_stands_by_for_the_runner_lock(app, enabled):
    app.config["SCHEDULER_ENABLED"] = enabled
    runner = scheduler.get()
    runner.stand_by()
    if enabled:
        wait_until(lambda: held_elsewhere(runner.lock.path), 5, "the runner to take the lock")
        wait_until(lambda: "digest" in stored_job_ids(), 5, "the runner to add the digest job")
    else:
        assert not held_elsewhere(runner.lock.path)
        assert "digest" not in stored_job_ids()
