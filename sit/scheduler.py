"""APScheduler in every process; its jobs run in one process only, the holder of the runner lock.

Every process schedules: its `BackgroundScheduler` starts paused, so `add_job` writes the job to
the `apscheduler_jobs` table in SIT's database and runs nothing. Serving processes (gunicorn
workers, see `gunicorn.conf.py`) also stand by for the runner lock. The one that gets it:

- makes sure the digest's interval job exists, without postponing a run that is due;
- resumes its scheduler, which runs every due job, however long the server was down
  (`misfire_grace_time=None`), once (`coalesce=True`), never overlapping (`max_instances=1`);
- writes its heartbeat row every `health.HEARTBEAT_SECONDS`, from a job, so that every worker on
  every host sees which process runs the jobs, and only while its scheduler really runs them;
- runs a sweep every `SWEEP_SECONDS`: it sends due emails that no job would send (retries, and
  the safety net for any other), and, being a job, wakes the scheduler, which then sees the jobs
  other processes added (APScheduler 3 never wakes up for those on its own) long before they are
  due.
- hands the due webhook messages to their senders every `SWEEP_SECONDS`, from a job of its own
  (`sit.webhooks.sender` sends them on threads of its own: a slow receiver holds up no email).

An email's job is written in the email's own transaction (`MigratedJobStore.add_in`): both are
committed, or neither.

The runner lock is a file lock among the processes of one host (SQLite), or a PostgreSQL advisory
lock among the processes of every host that shares the database. When the runner dies the system
releases its lock, and a waiting process takes over at once. A runner that finds its lock gone (its
lock's connection cut) stops running jobs and stands by again.

The runner never dies silently: whatever stops a process from standing by, taking over or running
(the lock file's folder, a database not migrated yet, a lost connection) is logged with its
reason, and tried again after a back-off, for as long as the process serves.
"""

import contextlib
import fcntl
import logging
import os
import pickle
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import datetime_to_utc_timestamp
from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from sit import clock, health
from sit.errors import not_migrated
from sit.extensions import db

log = logging.getLogger(__name__)

SWEEP_SECONDS = 0.5  # how late, at most, a job another process added is noticed, or a retry sent
FIRST_RETRY_SECONDS = 1  # after a failed round of standing by; doubles each time, up to:
MAX_RETRY_SECONDS = 30
CHECK_SECONDS = 1  # how often the runner makes sure it still holds the lock

# Stored jobs name their functions by these strings: keep them when moving code.
DELIVER = "sit.jobs:deliver"
DIGEST = "sit.jobs:digest"
HEARTBEAT = "sit.jobs:heartbeat"
WEBHOOKS = "sit.jobs:hand_webhooks"
LOCAL_JOBS = ("sweep", "heartbeat", "webhooks")  # the runner's own, in its memory
# Every job runs however late (`None`), once for all its missed runs, never overlapping itself.
JOB_DEFAULTS = {"coalesce": True, "misfire_grace_time": None, "max_instances": 1}


class RunnerLock(Protocol):
    """Held by at most one process at a time, and released by the system when its holder dies."""

    def acquire(self, blocking: bool = True) -> bool: ...

    def held(self) -> bool:
        """Whether this process holds the lock still (asked by the holder)."""
        ...

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

    def held(self) -> bool:
        return self.file is not None

    def release(self) -> None:
        file, self.file = self.file, None  # the runner thread and `shutdown` may both release
        if file is not None:
            file.close()  # closing the file releases the lock


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, held on a connection of its own: exclusive among
    the processes of every host that shares the database. The server releases it when that
    connection ends: the holder exits or is killed, or, through the TCP keepalives set below,
    within about 10 s of its host or network going away."""

    KEY = 0x5117  # SIT's advisory lock key in its database ("SIT")
    KEEPALIVES = {  # ask the server to probe this connection's client: a dead host frees the lock
        "tcp_keepalives_idle": 4,
        "tcp_keepalives_interval": 2,
        "tcp_keepalives_count": 3,
    }

    def __init__(self, url: sa.URL) -> None:
        self.engine = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.connection: sa.Connection | None = None

    def acquire(self, blocking: bool = True) -> bool:
        connection = self.engine.connect()
        try:
            for name, value in self.KEEPALIVES.items():
                connection.exec_driver_sql(f"SET {name} = {value}")
            if blocking:  # waits in the server for the holder to go
                connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": self.KEY})
                taken = True
            else:
                query = sa.text("SELECT pg_try_advisory_lock(:key)")
                taken = connection.scalar(query, {"key": self.KEY})
        except BaseException:
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self.connection = connection
        return True

    def held(self) -> bool:
        if self.connection is None:
            return False
        try:
            self.connection.exec_driver_sql("SELECT 1")
        except SQLAlchemyError:
            log.warning("the runner lock's connection is gone, and the lock with it")
            self.release()
            return False
        return True

    def release(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self.connection.close()  # ending the session releases the lock
            self.connection = None


def runner_lock(app: Flask) -> RunnerLock:
    """The lock that elects the runner: across hosts on PostgreSQL, else among one host's
    processes (SQLite is one host's database)."""
    if db.engine.dialect.name == "postgresql":
        return AdvisoryLock(db.engine.url)
    return FileLock(Path(app.instance_path) / "scheduler.lock")


class MigratedJobStore(SQLAlchemyJobStore):
    """APScheduler's job store on the `apscheduler_jobs` table that migration 0002 creates.

    APScheduler 3's own store creates its table when it starts, if missing. This one leaves that
    to the migration alone, so that processes start in any order: a worker started before
    `flask db upgrade` creates nothing (its runner waits, saying why, until the schema exists),
    and the migration never races a worker to create the table.
    """

    def start(self, scheduler: Any, alias: str) -> None:
        BaseJobStore.start(self, scheduler, alias)  # without SQLAlchemyJobStore's CREATE TABLE

    def add_in(self, connection: sa.Connection, job: Job) -> None:
        """Write a new job's row as `add_job` does, but through the caller's connection, in its
        transaction: the job is committed with what it is for, or not at all."""
        row = {
            "id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
        }
        connection.execute(self.jobs_t.insert(), row)

    def remove_in(self, connection: sa.Connection, job_ids: list[str]) -> None:
        """Delete these jobs' rows, if there, in the caller's transaction."""
        connection.execute(self.jobs_t.delete().where(self.jobs_t.c.id.in_(job_ids)))


def reason(error: Exception) -> str:
    """What stopped the runner, in one line."""
    if not_migrated(error):
        return f"the database is not migrated yet ({error.orig}); run `flask db upgrade`"
    message = str(getattr(error, "orig", None) or error).splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"


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
        self.store = MigratedJobStore(engine=db.engine)
        self.aps = BackgroundScheduler(
            jobstores={
                "default": self.store,
                "local": MemoryJobStore(),  # the runner's own sweep, never shared
            },
            job_defaults=JOB_DEFAULTS,
            timezone=UTC,
        )
        self.starting = threading.Lock()
        self.stopped = threading.Event()

    def start(self) -> None:
        """Start paused (once per process): from now on, jobs added are written to the store."""
        with self.starting:
            if not self.aps.running:
                self.aps.start(paused=True)

    def shutdown(self) -> None:
        """Stop, leaving the job table as it is: on its way out APScheduler 3 looks at the due
        jobs once more, and would move or drop those it can no longer run. The stores are not
        shut down: the job store's engine is the app's, which Flask-SQLAlchemy disposes of, once
        the jobs running now are done with it."""
        self.stopped.set()
        if self.aps.running:
            for alias in ("default", "local"):
                self.aps.remove_jobstore(alias, shutdown=False)
            self.aps.shutdown(wait=True)
        self.lock.release()

    def schedule_email(self, email_id: int, to_address: str, due_at: datetime) -> None:
        """Add, in the transaction that queues the email (`db.session`'s), the job that sends it
        when due.

        The row is written directly, not through `add_job`: that takes APScheduler's job-store
        lock, which the runner's scheduler thread holds while it waits for SQLite's write lock to
        update a due job, so inside a write transaction it deadlocks until the busy timeout.
        Without that lock nothing waits on this process. The runner sees the job at its next
        sweep (`SWEEP_SECONDS`), as it sees every job another process adds.
        """
        trigger = DateTrigger(due_at, timezone=UTC)
        job = Job(
            self.aps,
            id=f"email-{email_id}",
            func=DELIVER,
            trigger=trigger,
            executor="default",
            args=(),
            kwargs={},
            name=f"email {email_id} to {to_address}",
            next_run_time=trigger.run_date,
            **JOB_DEFAULTS,
        )
        self.store.add_in(db.session.connection(), job)

    def unschedule_emails(self, email_ids: list[int]) -> None:
        """Remove, in the transaction that cancels them, the jobs of cancelled emails (a job
        left behind would find nothing to send)."""
        if email_ids:
            job_ids = [f"email-{email_id}" for email_id in email_ids]
            self.store.remove_in(db.session.connection(), job_ids)

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
        threading.Thread(target=self.run_when_elected, name="sit-runner", daemon=True).start()

    def run_when_elected(self) -> None:
        """Stand by, run the jobs while elected, stand by again, until the process stops.

        A round that fails, whatever the error, is logged in one line with its reason (and its
        traceback too, the first time, for an error that is not the database's or the system's)
        and tried again after a back-off: 1 s, doubling up to 30 s, back to 1 s after a round
        that took over. The thread never ends while the process serves.
        """
        global _runner_app
        _runner_app = self.app
        delay = FIRST_RETRY_SECONDS
        while not self.stopped.is_set():
            try:
                self.serve_one_term()
                delay = FIRST_RETRY_SECONDS
            except Exception as error:
                if self.stopped.is_set():
                    break  # the process is stopping (`shutdown`): what failed no longer matters
                message = "process %d cannot run SIT's jobs: %s; trying again in %d s"
                unexpected = not isinstance(error, SQLAlchemyError | OSError)
                traceback = unexpected and delay == FIRST_RETRY_SECONDS
                log.warning(message, os.getpid(), reason(error), delay, exc_info=traceback)
                self.stopped.wait(delay)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    def serve_one_term(self) -> None:
        """Wait for the runner lock, run the jobs while it is held, then let go of it."""
        self.start()
        self.lock.acquire()
        try:
            with self.app.app_context():
                self.take_over()
            log.info("process %d now runs SIT's jobs", os.getpid())
            while self.lock.held() and not self.stopped.wait(CHECK_SECONDS):
                pass
        finally:
            self.step_down()

    def step_down(self) -> None:
        """Run no more jobs here (another process may hold the lock by now), and let go of it."""
        if not self.stopped.is_set():
            if self.aps.state == STATE_RUNNING:
                self.aps.pause()
                log.warning("process %d no longer runs SIT's jobs", os.getpid())
            for job_id in LOCAL_JOBS:
                with contextlib.suppress(JobLookupError):
                    self.aps.remove_job(job_id, jobstore="local")
            self.forget()
        self.lock.release()

    def forget(self) -> None:
        """Clear the heartbeat row if it names this process: no runner is seen until the next
        one beats (at once when another process is waiting for the lock)."""
        try:
            with self.app.app_context():
                health.forget(socket.gethostname(), os.getpid())
        except SQLAlchemyError as error:  # the database is gone: the row ages out in 10 s
            log.warning("could not clear the runner's heartbeat row: %s", error)

    def take_over(self) -> None:
        self.ensure_digest_job()
        self.aps.add_job(
            HEARTBEAT,
            "interval",
            seconds=health.HEARTBEAT_SECONDS,
            args=(socket.gethostname(), os.getpid(), clock.utcnow()),
            id="heartbeat",
            jobstore="local",
            next_run_time=clock.utcnow(),  # seen at once
            replace_existing=True,
        )
        self.aps.add_job(
            DELIVER,
            "interval",
            seconds=SWEEP_SECONDS,
            id="sweep",
            jobstore="local",  # in this process's memory: never stored, never run elsewhere
            next_run_time=clock.utcnow(),  # first: what fell due while no runner ran
            replace_existing=True,
        )
        self.aps.add_job(  # the webhook outbox's sweep: a job of its own, never the email's
            WEBHOOKS,
            "interval",
            seconds=SWEEP_SECONDS,
            id="webhooks",
            jobstore="local",
            next_run_time=clock.utcnow(),
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
            soonest = min(job.next_run_time, clock.utcnow() + interval)
            self.aps.modify_job("digest", trigger=trigger, next_run_time=soonest)


def get() -> Scheduler:
    return current_app.extensions["sit.scheduler"]


def init_app(app: Flask) -> None:
    """Attach the scheduler (not started: nothing runs until a job is added or a worker serves)."""
    app.extensions["sit.scheduler"] = Scheduler(app)
