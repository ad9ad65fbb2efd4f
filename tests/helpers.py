"""What the tests share that is not a fixture: paths and constants, waiting for a condition,
the CLI and real gunicorn servers as subprocesses, SMTP sinks, a webhook receiver, a stopped
clock."""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import flask
import pytest
import requests
import sqlalchemy as sa
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from flask_migrate import upgrade
from sqlalchemy.pool import NullPool
from standardwebhooks.webhooks import Webhook as Verifier

from sit import create_app, notifications, scheduler
from sit.auth import issue_token
from sit.extensions import db
from sit.models import Comment, Email, User

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"


# The suite runs on SQLite; with TEST_DATABASE_URL (a PostgreSQL server's URL, as `.ci/run`
# sets it) it runs on PostgreSQL, each test on a database of its own.
POSTGRES = os.environ.get("TEST_DATABASE_URL")


class Postgres:
    """Databases on the PostgreSQL server at `url`, made and dropped for tests."""

    def __init__(self, url: str) -> None:
        self.url = sa.make_url(url)
        self.admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, name: str, template: str | None = None) -> str:
        """A new, empty (or copied) database; returns its URL."""
        self.drop(name)
        copy = f" TEMPLATE {template}" if template else ""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}{copy}")
        return self.url_of(name)

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def waiting_on(connection: sa.Connection) -> list[int]:
    """The server processes waiting for a lock the connection's session holds."""
    query = """SELECT pid FROM pg_locks
        WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"""
    return list(connection.scalars(sa.text(query)))


def migrate(uri: str) -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": uri, "SECRET_KEY": "x"})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


@contextmanager
def app_at(revision: str, folder: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An app on a database of its own migrated up to `revision` only (PostgreSQL on the
    PostgreSQL run, else SQLite in `folder`), in its context; dropped afterwards."""
    name = f"sit_at_{revision}_{os.getpid()}"
    postgres = request.getfixturevalue("postgres") if POSTGRES else None
    url = postgres.create(name) if postgres else f"sqlite:///{folder}/old.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIT_INSTANCE_PATH", str(folder))
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x"})
    try:
        with app.app_context():
            upgrade(directory=str(ROOT / "migrations"), revision=revision)
            yield app
            db.session.remove()
            db.engine.dispose()
    finally:
        if postgres:
            postgres.drop(name)


@contextmanager
def app_context(**env: str) -> Iterator[Any]:
    """An app built from the instance folder and `SIT_*` variables (`env` among them), as a
    process builds it, in its context; closed as a process ends."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        app = create_app({"TESTING": True, "PUBLIC_URL": "http://sit.test"})
    with app.app_context():
        try:
            yield app
        finally:
            scheduler.get().shutdown()
            db.session.remove()
            db.engine.dispose()


def bearer(user: User, expires_in: int = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user, expires_in)}"}


def outbox(**where: Any) -> list[Email]:
    """The outbox rows, oldest first, as the database has them now, whoever wrote them."""
    db.session.rollback()  # end the last read's snapshot
    return list(db.session.scalars(sa.select(Email).filter_by(**where).order_by(Email.id)))


def comment_on(issue_id: int, author: User, body: str) -> Comment:
    """A comment made directly, committed with the emails it causes, as the comment API does."""
    comment = Comment(issue_id=issue_id, author_id=author.id, body=body)
    db.session.add(comment)
    notifications.comment_posted(comment)
    db.session.commit()
    return comment


def ids(response: Any) -> list[int]:
    """The ids of a listing's issues (or users), once it answered 200."""
    assert response.status_code == 200, response.json
    return [item["id"] for item in response.json]


@contextmanager
def statements() -> Iterator[list[str]]:
    """The SQL statements the app's engine runs meanwhile (an executemany once)."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def link_map(response: Any) -> dict[str, str]:
    """A listing's Link header: the URL of each rel, as a path under PUBLIC_URL."""
    parts = [part.split("; ") for part in response.headers["Link"].split(", ")]
    return {rel[5:-1]: url[1:-1].removeprefix("http://sit.test") for url, rel in parts}


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flask_cli(instance: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `flask ...` in a subprocess against an instance folder, as a user would."""
    return subprocess.run(
        **flask_command(instance, *args, **env), capture_output=True, text=True, timeout=120
    )


def flask_command(instance: Path, *args: str, **env: str) -> dict[str, Any]:
    """`subprocess` arguments that run `flask ...` against an instance folder."""
    return {
        "args": [str(BIN / "flask"), *args],
        "cwd": ROOT,
        "env": os.environ | {"SIT_INSTANCE_PATH": str(instance), "FLASK_APP": "sit"} | env,
        "stdin": subprocess.DEVNULL,
    }


@dataclass
class Server:
    """A gunicorn master (in a process group of its own, with its workers) serving SIT."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def workers(self) -> list[int]:
        """The pids of the master's live worker processes."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        """`kill -9` the master and every worker at once, as a power cut would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def elected(self) -> int | None:
        """The pid of the worker that last said it runs the jobs, if any has."""
        found = RUNNER_LINE.findall(self.log.read_text())
        return int(found[-1]) if found else None

    def runner(self) -> int:
        """The pid of the worker that holds the runner lock, once one has taken over."""
        return wait_until(self.elected, 30, "a worker to take over the jobs")


RUNNER_LINE = re.compile(r"process (\d+) now runs SIT's jobs")


@contextmanager
def gunicorn(
    instance: Path, workers: int = 4, log: str = "gunicorn.log", **env: str
) -> Iterator[Server]:
    """Serve SIT with real gunicorn and `workers` workers, on the instance folder's database;
    its links (PUBLIC_URL) name the server's own address unless `env` says otherwise.

    `log` is a file in the instance folder, or an absolute path: outside an instance folder the
    server is to make itself (`SIT_INSTANCE_PATH` naming no folder yet)."""
    port = free_port()
    env = {"SIT_PUBLIC_URL": f"http://127.0.0.1:{port}"} | env
    log_path = instance / log
    log_file = log_path.open("a")
    process = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-c",
            "gunicorn.conf.py",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=os.environ | {"SIT_INSTANCE_PATH": str(instance)} | env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)

    def answering() -> bool:
        """SIT answers: `200`, or `503` while its database is unreachable or not migrated yet."""
        try:
            return requests.get(f"{server.url}/healthz", timeout=1).status_code in (200, 503)
        except (requests.ConnectionError, requests.Timeout):  # not listening, or still booting
            assert process.poll() is None, log_path.read_text()
            return False

    try:
        wait_until(answering, 30, "gunicorn to answer /healthz")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        log_file.close()


@dataclass
class Received:
    """One message as the SMTP sink got it."""

    arrived: float  # time.time() when the DATA command completed
    peer: tuple[str, int]  # the client's address: one per SMTP connection
    to: list[str]
    message: EmailMessage
    login: bytes | None  # who the client logged in as (AUTH), if it did
    tls: bool  # whether the connection was encrypted (STARTTLS or TLS from the start)
    raw: bytes = b""  # the message as it came

    @property
    def subject(self) -> str:
        return self.message["Subject"]

    def part(self, subtype: str) -> str:
        """The decoded text of the `text/<subtype>` part."""
        return self.message.get_body(preferencelist=(subtype,)).get_content()


class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts.

    `stop()` takes it down (connections are refused); `refuse` makes it answer DATA with that
    reply instead of accepting.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self.refuse: str | None = None
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return self.refuse
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        tls = server.transport.get_extra_info("ssl_object") is not None
        login = session.auth_data.login if session.auth_data else None
        received = Received(
            time.time(),
            session.peer,
            envelope.rcpt_tos,
            message,
            login,
            tls,
            envelope.original_content,
        )
        self.received.append(received)
        return "250 OK"

    def start(self) -> None:
        self.controller = self.make_controller()
        self.controller.start()

    def make_controller(self) -> Controller:
        return Controller(self, hostname="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def env(self) -> dict[str, str]:
        """The settings that send SIT's email here, as users set them."""
        return {"SIT_MAIL_SERVER": "127.0.0.1", "SIT_MAIL_PORT": str(self.port)}

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.to]


class Clock:
    """SIT's one clock (`sit.clock`), stopped until a test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# SMTP as providers run it: TLS with a certificate from a CA the tests make, and AUTH.

SMTP_USER = "sit@example.com"
SMTP_PASSWORD = "app password 16c"


@dataclass
class TrustedCA:
    """The private CA that SIT is told to trust (MAIL_CA_FILE)."""

    ca: trustme.CA
    file: Path


class WireSMTP(SMTP):
    """aiosmtpd's server, which also keeps every byte it reads (decrypted) in its handler's
    `wire`."""

    def data_received(self, data: bytes) -> None:
        self.event_handler.wire += data
        super().data_received(data)


class WireController(Controller):
    def factory(self) -> WireSMTP:
        return WireSMTP(self.handler, **self.SMTP_kwargs)


class AuthSink(SmtpSink):
    """The SMTP sink as providers run it: AUTH (only SMTP_USER with SMTP_PASSWORD gets in) over
    STARTTLS (`tls="starttls"`, port 587's way), TLS from the start (`"implicit"`, 465's) or no
    TLS (`"plain"`, 25's), its certificate for `host` issued by `issuer`.

    It keeps every AUTH attempt (`logins`) and every byte it reads (`wire`), and takes a password
    without TLS too: only SIT may refuse to send one.
    """

    def __init__(self, tls: str, issuer: trustme.CA, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.tls = tls
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issuer.issue_cert(host).configure_cert(self.context)
        self.logins: list[LoginPassword] = []
        self.wire = b""

    def authenticate(self, *args: Any) -> AuthResult:
        """aiosmtpd's authenticator: (server, session, envelope, mechanism, login)."""
        login = args[-1]
        self.logins.append(login)
        accepted = login == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        return AuthResult(success=accepted, handled=False, auth_data=login)

    def make_controller(self) -> Controller:
        return WireController(
            self,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=self.context if self.tls == "implicit" else None,
            tls_context=self.context if self.tls == "starttls" else None,
            authenticator=self.authenticate,
            auth_require_tls=False,
        )

    @property
    def env(self) -> dict[str, str]:
        """The settings that send SIT's email here, logged in, as users set them (but for
        MAIL_CA_FILE)."""
        use = {"starttls": {"SIT_MAIL_USE_TLS": "true"}, "implicit": {"SIT_MAIL_USE_SSL": "true"}}
        login = {"SIT_MAIL_USERNAME": SMTP_USER, "SIT_MAIL_PASSWORD": SMTP_PASSWORD}
        return super().env | use.get(self.tls, {}) | login

    def commands(self) -> list[str]:
        """The SMTP commands it read, in order (their first word)."""
        return [line.split()[0].decode().upper() for line in self.wire.splitlines() if line]


CLOSE = {"Connection": "close"}  # a new connection per request, so any worker may take it


def cli_create_user(instance: Path, username: str, **env: str) -> int:
    """Add a user through the real CLI; returns its id."""
    email = f"{username}@example.com"
    result = flask_cli(
        instance, "sit", "create-user", username, "--email", email, "--password", PASSWORD, **env
    )
    assert result.returncode == 0, result.stderr
    return int(re.search(r"\(id (\d+)\)", result.stdout).group(1))


def login(url: str, username: str, password: str = PASSWORD) -> requests.Response:
    form = {"username": username, "password": password}
    return requests.post(f"{url}/get-token/", data=form, headers=CLOSE, timeout=60)


def signed_in(url: str, username: str) -> dict[str, str]:
    """Headers of `username` signed in through the server's `/get-token/` (one connection each)."""
    response = login(url, username)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"} | CLOSE


@dataclass
class Hook:
    """One request a webhook receiver got, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """A webhook receiver on loopback (http.server, a thread per request) that keeps every
    request. It answers `answers` in turn, else 500 to the first `fail_first` requests of each
    webhook-id, else 200; after sleeping `delay` seconds, and while `held` is clear, waiting
    for it first (up to 30 s). `arrived` counts the requests read so far."""

    def __init__(self) -> None:
        self.got: list[Hook] = []
        self.answers: list[int] = []
        self.fail_first = 0
        self.delay = 0.0
        self.arrived = 0
        self.held = threading.Event()
        self.held.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrived += 1
                receiver.held.wait(30)
                time.sleep(receiver.delay)
                status = receiver.answer(self.headers["webhook-id"])
                receiver.got.append(Hook(dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, msg_id: str) -> int:
        if self.answers:
            return self.answers.pop(0)
        tried = sum(hook.msg_id == msg_id for hook in self.got)
        return 500 if tried < self.fail_first else 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.held.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """The bodies of the requests answered 2xx, each verified as Standard Webhooks says
        (the `standardwebhooks` package, not SIT's code): raises if any signature is wrong."""
        verifier = Verifier(secret)
        lowered = [({k.lower(): v for k, v in h.headers.items()}, h) for h in self.got]
        return [verifier.verify(h.body, headers) for headers, h in lowered if h.status < 300]


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: Any, url: str = "/sign-in") -> str:
    """The CSRF token of the form on a page (the session's: any form of it will do).

    Requests made inside a test's app context share its `g`, where Flask-WTF keeps the token
    it made last: dropped first, so each client's session gets its own."""
    flask.g.pop("csrf_token", None)
    page = client.get(url)
    assert page.status_code == 200, page.text
    return CSRF_FIELD.search(page.text).group(1)


def web_sign_in(client: Any, username: str, password: str = PASSWORD, **environ: Any) -> Any:
    """Sign in through the sign-in form; the client then holds the session cookie."""
    form = {"username": username, "password": password, "csrf_token": csrf_token(client)}
    signed = client.post("/sign-in", data=form, environ_base=environ)
    flask.g.pop("csrf_token", None)  # the new session makes its own (see `csrf_token`)
    return signed
