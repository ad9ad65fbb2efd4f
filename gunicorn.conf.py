"""gunicorn settings for SIT: `gunicorn -c gunicorn.conf.py wsgi:app`.

Command-line flags and GUNICORN_CMD_ARGS override these; WEB_CONCURRENCY sets the worker count.
"""

import os
import socket
import sys

from gunicorn import util

bind = "127.0.0.1:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'  # no headers: tokens never reach the log
control_socket_disable = True  # several SIT servers may run side by side


def on_starting(server: object) -> None:
    """Stop at once, with one line, when the configuration is invalid (before any worker boots).

    The app is built as `wsgi.py` builds it: the workers, forked from here, start with what this
    imports (so without alembic, see `create_app`)."""
    from sit import create_app
    from sit.config import ConfigError

    try:
        create_app(migrations=False)
    except ConfigError as error:
        print(f"sit: {error.message}", file=sys.stderr)
        sys.exit(1)


def post_worker_init(worker: object) -> None:
    """Every worker stands by to run the scheduler's jobs; the holder of the runner lock runs
    them, and when it dies another worker takes over (`sit/scheduler.py`)."""
    worker.wsgi.extensions["sit.scheduler"].stand_by()


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
