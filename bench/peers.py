"""The peers SIT is measured against, each started as its users would start it: the DRF peer
(`bench/drf/`, gunicorn) and the seed's stack (the same with `seedstack.settings`: gunicorn, and a
Celery worker taking its countdown tasks from Redis)."""

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import servers

DRF = servers.BENCH / "drf"
USERS, ISSUES = 100, 1000  # seeded, as SIT's instance is
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Peer:
    server: servers.Server
    token: str  # demo1's
    db: Path
    worker: servers.Server | None = None  # the seed's Celery worker
    prefix: str = ""  # its Redis keys

    def creates(self) -> int:
        """How many issues the benchmark created (each assigned, so each scheduled an email)."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT count(*) FROM tracker_issue").fetchone()[0] - ISSUES

    def scheduled(self) -> int:
        """How many tasks wait in Redis: queued, or reserved by the worker for their countdown."""
        import redis  # through Celery

        client = redis.Redis.from_url(REDIS_URL)
        return client.hlen(f"{self.prefix}unacked") + client.llen(f"{self.prefix}celery")

    def stop(self) -> None:
        self.server.stop()
        if self.worker:
            import redis

            self.worker.stop()
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{self.prefix}*"))
            if keys:
                client.delete(*keys)


def start_drf(name: str, settings: str, folder: Path, **extra: str) -> Peer:
    """A DRF project's gunicorn (Django settings module `settings`) over its own SQLite database,
    seeded as SIT's is: 100 users, 1,000 issues."""
    db = folder / f"{name}.sqlite3"
    env = servers.clean_env(BENCH_DRF_DB=str(db), DJANGO_SETTINGS_MODULE=settings, **extra)
    manage = [sys.executable, str(DRF / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True)
    seed = [*manage, "seed", "--users", str(USERS), "--issues", str(ISSUES)]
    token = subprocess.run(seed, env=env, check=True, capture_output=True, text=True)
    server = servers.gunicorn(name, "--pythonpath bench/drf drfpeer.wsgi:application",
                              "bench/gunicorn_peer.py", env, folder)  # fmt: skip
    return Peer(server, token.stdout.strip(), db)


def start_seed_stack(name: str, folder: Path, sink_port: int) -> Peer:
    """The seed's stack: the DRF peer whose creates schedule `send_assignment_email` with the
    seed's countdown, and its Celery worker (`celery -A seedstack worker`)."""
    servers.ensure_redis(REDIS_URL)
    prefix = f"sit-bench-{os.getpid()}:"
    extra = {"BENCH_REDIS_URL": REDIS_URL, "BENCH_REDIS_PREFIX": prefix,
             "BENCH_SMTP_PORT": str(sink_port)}  # fmt: skip
    peer = start_drf(name, "seedstack.settings", folder, **extra)
    peer.prefix = prefix
    env = servers.clean_env(DJANGO_SETTINGS_MODULE="seedstack.settings", PYTHONPATH=str(DRF),
                            BENCH_DRF_DB=str(peer.db), **extra)  # fmt: skip
    try:
        peer.worker = servers.celery_worker(f"{name}-celery", "seedstack", env, folder, DRF)
    except RuntimeError:
        peer.stop()
        raise
    return peer
