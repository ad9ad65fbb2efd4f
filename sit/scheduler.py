"""APScheduler in every process; its jobs run in one process only, the holder of the runner lock.

Every process schedules: its `BackgroundScheduler` starts paused, so `add_job` writes the job to
the `apscheduler_jobs` table in SIT's database and runs nothing. Serving processes (gunicorn
workers, see `gunicorn.conf.py`) also stand by for the runner lock. The one that gets it:

- makes sure the digest's interval job exists, without postponing a run that is due;
- resumes its scheduler, which runs every due job, however long the server was down
  (`misfire_grace_time=None`), once (`coalesce=True`), never overlapping (`max_instances=1`);
- runs a sweep every `SWEEP_SECONDS`: it sends due emails that no job would send (retries, and an
  email whose job was never added because its process died between the commit and `add_job`),
  and, being a job, wakes the scheduler, which then sees the jobs other processes added
  (APScheduler 3 never wakes up for those on its own) long before they are due.

When the runner dies the system releases its lock, and a waiting process takes over at once.
"""

import contextlib
import fcntl
import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from sit.extensions import db
from sit.models import Email

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1  # how late, at most, a job another process added is noticed, or a retry sent
RETRY_SECONDS = 5  # before trying again to take over, after a database error

# Stored jobs name their functions by these strings: keep them when moving code.
DELIVER = "sit.jobs:deliver"
DIGEST = "sit.jobs:digest"


class RunnerLock(Protocol):
    """Held by at most one process at a time, and released by the system when its holder dies."""

    def acquire(self, blocking: bool = True) -> bool: ...

    def release(self) -> None: ...


class FileLock:
    """An OS lock (`flock`) on a file in the instance folder: exclusive among the processes of
    one host. The kernel releases it when the holder exits, however it exits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def acquire(self, blocking: bool = True) -> bool:
        file = self.path.open("a")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            file.close()
            return False
        self.file = file
        return True

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the file releases the lock
            self.file = None


def runner_lock(app: Flask) -> RunnerLock:
    """The lock that elects the runner: a file lock, for the processes of one host."""
    return FileLock(Path(app.instance_path) / "scheduler.lock")


_runner_app: Flask | None = None


def runner_app() -> Flask:
    """The app whose jobs this process runs (the job functions need its context)."""
    assert _runner_app is not None, "jobs run only in the process holding the runner lock"
    return _runner_app


class Scheduler:
    """The app's scheduler in this process."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.lock = runner_lock(app)
        self.aps = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=db.engine),
                "local": MemoryJobStore(),  # the runner's own sweep, never shared
            },
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        self.starting = threading.Lock()

    def start(self) -> None:
        """Start paused (once per process): from now on, jobs added are written to the store."""
        with self.starting:
            if not self.aps.running:
                self.aps.start(paused=True)

    def shutdown(self) -> None:
        """Stop, leaving the job table as it is: on its way out APScheduler 3 looks at the due
        jobs once more, and would move or drop those it can no longer run. The stores are not
        shut down: the job store's engine is the app's, which Flask-SQLAlchemy disposes of."""
        if self.aps.running:
            for alias in ("default", "local"):
                self.aps.remove_jobstore(alias, shutdown=False)
            self.aps.shutdown(wait=False)
        self.lock.release()

    def schedule_email(self, email: Email) -> None:
        """Add the job that sends a committed email when it is due."""
        self.start()
        try:
            self.aps.add_job(
                DELIVER,
                "date",
                run_date=email.due_at,
                id=f"email-{email.id}",
                name=f"email {email.id} to {email.to_address}",
                replace_existing=True,
            )
        except SQLAlchemyError:
            log.exception("could not add the job of email %d; the sweep sends it", email.id)

    def unschedule_emails(self, email_ids: list[int]) -> None:
        """Remove the jobs of cancelled emails (a job left behind would find nothing to send)."""
        for email_id in email_ids:
            with contextlib.suppress(JobLookupError, SQLAlchemyError):
                self.aps.remove_job(f"email-{email_id}", jobstore="default")

    def run_soon(self, func: str, job_id: str) -> None:
        """Have the runner, in whichever process it is, run `func` now."""
        self.start()
        self.aps.add_job(func, "date", id=job_id, name=job_id, replace_existing=True)

    def jobs(self) -> list[Any]:
        """The stored jobs, soonest first."""
        self.start()
        return self.aps.get_jobs(jobstore="default")

    def stand_by(self) -> None:
        """Run jobs in this process whenever it holds the runner lock (serving processes)."""
        if not self.app.config["SCHEDULER_ENABLED"]:
            return
        self.start()
        threading.Thread(target=self.run_when_elected, name="sit-runner", daemon=True).start()

    def run_when_elected(self) -> None:
        self.lock.acquire()
        global _runner_app
        _runner_app = self.app
        while True:
            try:
                with self.app.app_context():
                    self.take_over()
                break
            except SQLAlchemyError:
                log.exception("could not take over the jobs; trying again")
                time.sleep(RETRY_SECONDS)
        log.info("process %d now runs SIT's jobs", os.getpid())

    def take_over(self) -> None:
        self.ensure_digest_job()
        self.aps.add_job(
            DELIVER,
            "interval",
            seconds=SWEEP_SECONDS,
            id="sweep",
            jobstore="local",  # in this process's memory: never stored, never run elsewhere
            next_run_time=datetime.now(UTC),  # first: what fell due while no runner ran
            replace_existing=True,
        )
        self.aps.resume()

    def ensure_digest_job(self) -> None:
        """The digest's interval job, kept across restarts so that none postpones a due digest.
        A changed `DIGEST_INTERVAL` applies from now on; a run already due stays due."""
        interval = timedelta(seconds=current_app.config["DIGEST_INTERVAL"])
        trigger = IntervalTrigger(seconds=interval.total_seconds(), timezone=UTC)
        job = self.aps.get_job("digest", jobstore="default")
        if job is None:
            self.aps.add_job(DIGEST, trigger, id="digest", name="digest")
        elif job.trigger.interval != interval:
            soonest = min(job.next_run_time, datetime.now(UTC) + interval)
            self.aps.modify_job("digest", trigger=trigger, next_run_time=soonest)


def get() -> Scheduler:
    return current_app.extensions["sit.scheduler"]


def init_app(app: Flask) -> None:
    """Attach the scheduler (not started: nothing runs until a job is added or a worker serves)."""
    app.extensions["sit.scheduler"] = Scheduler(app)
