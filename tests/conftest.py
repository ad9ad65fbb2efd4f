"""Fixtures: `app` → `client`, `runner`; users and their tokens; real gunicorn servers; SMTP
sinks (plain, and TLS with AUTH as providers run it); SIT's clock, stopped."""

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import (
    PASSWORD,
    POSTGRES,
    AuthSink,
    Clock,
    Postgres,
    SmtpSink,
    TrustedCA,
    app_context,
    bearer,
    migrate,
)
from playwright.sync_api import Browser, sync_playwright

from sit import create_app
from sit.cli import create_user
from sit.extensions import mail
from sit.models import User

_databases = itertools.count()  # each test's database gets a name of its own


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    """The PostgreSQL server at 127.0.0.1:5432 (or TEST_DATABASE_URL's)."""
    return Postgres(POSTGRES or "postgresql+psycopg://postgres@127.0.0.1/test")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database built by the real migrations, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "sit.db"
    migrate(f"sqlite:///{path}")
    return str(path)


@pytest.fixture(scope="session")
def postgres_template(postgres: Postgres) -> Iterator[str]:
    """A PostgreSQL database built by the real migrations, the template of each test's."""
    template = f"sit_template_{os.getpid()}"
    migrate(postgres.create(template))
    yield template
    postgres.drop(template)


@pytest.fixture
def postgres_db(
    request: pytest.FixtureRequest, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A migrated PostgreSQL database of the test's own, named by SIT_SQLALCHEMY_DATABASE_URI
    for the app and every process the test starts. Tests of what only PostgreSQL does ask for
    it before `instance`, and so run on PostgreSQL in the SQLite run too."""
    template = request.getfixturevalue("postgres_template")
    name = f"sit_test_{os.getpid()}_{next(_databases)}"
    url = postgres.create(name, template=template)
    monkeypatch.setenv("SIT_SQLALCHEMY_DATABASE_URI", url)
    yield url
    postgres.drop(name)


@pytest.fixture
def migrated_database(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database of the test's own, outside any instance folder: a SQLite
    file in a folder of its own, or a database on the PostgreSQL server on the PostgreSQL run."""
    if POSTGRES:
        return request.getfixturevalue("postgres_db")
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(request.getfixturevalue("sqlite_template"), folder / "sit.db")
    return f"sqlite:///{folder / 'sit.db'}"


@pytest.fixture
def empty_database(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a database nobody has migrated yet, outside any instance folder: a SQLite file
    not made yet, or an empty database on the PostgreSQL server on the PostgreSQL run."""
    if not POSTGRES:
        folder = tmp_path / "data"
        folder.mkdir()
        yield f"sqlite:///{folder / 'sit.db'}"
        return
    postgres = request.getfixturevalue("postgres")
    name = f"sit_empty_{os.getpid()}_{next(_databases)}"
    yield postgres.create(name)
    postgres.drop(name)


@pytest.fixture
def instance(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """An instance folder of its own, and a migrated database of its own: in the folder, or on
    the PostgreSQL server on the PostgreSQL run."""
    folder = tmp_path / "instance"
    folder.mkdir()
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(folder))
    if POSTGRES:
        request.getfixturevalue("postgres_db")
    else:
        shutil.copy(request.getfixturevalue("sqlite_template"), folder / "sit.db")
    return folder


@pytest.fixture
def app(instance: Path) -> Iterator[Any]:
    with app_context() as app:
        yield app


@pytest.fixture
def boom(instance: Path) -> Any:
    """The answer of an app (not in TESTING mode) whose view raises an unhandled exception."""
    app = create_app()

    @app.get("/boom")
    def explode() -> None:
        raise RuntimeError("secret internals")

    return app.test_client().get("/boom")


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def alice(app: Any) -> User:
    return create_user("alice", "alice@example.com", PASSWORD, "Alice", "Liddell")


@pytest.fixture
def bob(app: Any) -> User:
    return create_user("bob", "bob@example.com", PASSWORD, "Bob", "Builder")


@pytest.fixture
def carol(app: Any) -> User:
    return create_user("carol", "carol@example.com", PASSWORD, "Carol", "Danvers")


@pytest.fixture
def root(app: Any) -> User:
    """An admin."""
    return create_user("root", "root@example.com", PASSWORD, "Ro", "Ot", is_admin=True)


@pytest.fixture
def as_root(root: User) -> dict[str, str]:
    return bearer(root)


@pytest.fixture
def as_alice(alice: User) -> dict[str, str]:
    return bearer(alice)


@pytest.fixture
def as_bob(bob: User) -> dict[str, str]:
    return bearer(bob)


@pytest.fixture
def new_issue(client: Any, as_alice: dict[str, str], bob: User) -> Callable[..., dict[str, Any]]:
    """Create an issue as alice (assigned to bob unless told otherwise) and return its JSON."""

    def create(**fields: Any) -> dict[str, Any]:
        body = {"title": "Printer on fire", "description": "Smoke", "assigned_to": bob.id} | fields
        response = client.post("/api/", json=body, headers=as_alice)
        assert response.status_code == 201, response.json
        return response.json

    return create


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def mail_to_sink(app: Any, smtp: SmtpSink) -> SmtpSink:
    """The in-process app sends its email to the SMTP sink."""
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp.port)
    mail.init_app(app)
    return smtp


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    stopped = Clock()
    monkeypatch.setattr("sit.clock.utcnow", lambda: stopped.now)
    return stopped


@pytest.fixture(scope="session")
def trusted_ca(tmp_path_factory: pytest.TempPathFactory) -> TrustedCA:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return TrustedCA(ca, path)


@pytest.fixture
def auth_sink() -> Iterator[Callable[..., AuthSink]]:
    """Start an `AuthSink` (its arguments); each is stopped after the test."""
    sinks: list[AuthSink] = []

    def start(tls: str, issuer: trustme.CA, host: str = "127.0.0.1") -> AuthSink:
        sink = AuthSink(tls, issuer, host)
        sink.start()
        sinks.append(sink)
        return sink

    yield start
    for sink in sinks:
        sink.stop()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `.ci/run` installs it


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium (never a downloaded one), driven by Playwright: one for the whole run,
    each test opening pages or contexts of its own."""
    assert CHROMIUM.exists(), "install Debian's chromium: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()
