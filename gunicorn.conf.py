"""gunicorn settings for SIT: `gunicorn -c gunicorn.conf.py wsgi:app`.

Command-line flags and GUNICORN_CMD_ARGS override these; WEB_CONCURRENCY sets the worker count.
"""

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from gunicorn import util

bind = "127.0.0.1:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'  # no headers: tokens never reach the log
control_socket_disable = True  # several SIT servers may run side by side

# prometheus_client's multiprocess mode: every process writes its metrics to files in this folder,
# and `/metrics` adds up those of every worker. It must be set before anything imports
# prometheus_client, so here, as this file loads; a reload (SIGHUP) reads this file again and
# keeps the folder. An operator may name one; otherwise a fresh one under the temporary folder.
METRICS_PREFIX = "sit-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_PREFIX)


def on_starting(server: object) -> None:
    """Stop at once, with one line, when the configuration is invalid (before any worker boots).

    The app is built as `wsgi.py` builds it: the workers, forked from here, start with what this
    imports (so without alembic, see `create_app`)."""
    from sit import create_app
    from sit.config import ConfigError

    metrics = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics.mkdir(parents=True, exist_ok=True)  # one the operator named may not exist yet
    for stale in metrics.glob("*.db"):
        stale.unlink()  # a previous run's counts, in a folder the operator named
    try:
        create_app(migrations=False)
    except ConfigError as error:
        print(f"sit: {error.message}", file=sys.stderr)
        sys.exit(1)


def post_worker_init(worker: object) -> None:
    """Every worker stands by to run the scheduler's jobs; the holder of the runner lock runs
    them, and when it dies another worker takes over (`sit/scheduler.py`)."""
    from sit import metrics

    worker.wsgi.extensions["sit.scheduler"].stand_by()
    metrics.count_worker()


def child_exit(server: object, worker: object) -> None:
    """A worker exited, however: drop its share of the gauges that count live processes."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: object) -> None:
    """Remove the metrics folder made above (not one the operator named)."""
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(METRICS_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)


def worker_exit(server: object, worker: object) -> None:
    """Stop the worker's scheduler before Python shuts down: its thread would otherwise go on
    handing the sweep to a thread pool that shutdown has closed (a traceback in the log). Also
    called in the master, for a worker already gone: there, nothing was loaded."""
    app = getattr(worker, "wsgi", None)
    if hasattr(app, "extensions"):
        app.extensions["sit.scheduler"].shutdown()


def write_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn answers a request it refuses before any app sees it (a request line over 4 KiB,
    too large or too many headers, a malformed request) in SIT's one error shape, problem+json,
    instead of its HTML page. gunicorn has no setting for that page, so this replaces the
    function that writes it (`gunicorn.util.write_error`, same arguments) in every process."""
    from sit.errors import http_problem

    util.write_nonblock(sock, http_problem(status_int, reason, mesg))


util.write_error = write_error
