"""The models and the migrations that build their tables."""

import os
import subprocess

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from flask_migrate import upgrade
from helpers import ROOT, app_at, flask_command, wait_until, waiting_on
from sqlalchemy.pool import NullPool
from werkzeug.exceptions import NotFound

from sit import search
from sit.extensions import db
from sit.models import MAX_ID, Issue, User, get_or_404


def test_migrations_build_exactly_the_models_and_the_job_stores_tables(app):
    expected = sa.MetaData()
    for table in db.metadata.tables.values():
        table.to_metadata(expected)
    SQLAlchemyJobStore(engine=db.engine).jobs_t.to_metadata(expected)
    with db.engine.connect() as connection:
        include = {"include_object": lambda _, name, type_, *__: search.is_modeled(name, type_)}
        context = MigrationContext.configure(connection, opts=include)
        differences = compare_metadata(context, expected)
    assert differences == []


MIGRATION_LOCK = 0x5118  # the key migrations/env.py locks on PostgreSQL
HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()


def test_hosts_migrating_at_once_on_postgresql_take_turns(postgres, tmp_path):
    url = postgres.create(f"sit_migrate_{os.getpid()}")
    database = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    command = flask_command(tmp_path, "db", "upgrade", SIT_SQLALCHEMY_DATABASE_URI=url)
    hosts: list[subprocess.Popen[bytes]] = []
    try:
        with database.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            hosts += [subprocess.Popen(**command, stderr=subprocess.PIPE) for _ in range(2)]
            wait_until(
                lambda: len(set(waiting_on(holder))) == 2,
                30,
                "both to wait their turn",
            )
        errors = [host.communicate(timeout=60)[1] for host in hosts]
        assert [host.returncode for host in hosts] == [0, 0], errors
        with database.connect() as connection:
            assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == HEAD
    finally:
        for host in hosts:
            host.kill()
            host.communicate()
        database.dispose()
        postgres.drop(f"sit_migrate_{os.getpid()}")


def test_password_is_hashed_with_scrypt_and_a_new_one_revokes_tokens(alice):
    generation = alice.token_generation
    assert alice.password_hash.startswith("scrypt:")
    alice.set_password("another one")
    assert alice.check_password("another one")
    assert not alice.check_password("correct horse battery staple")
    assert alice.token_generation == generation + 1


def test_etag_follows_the_version(alice):
    issue = Issue(title="t", creator=alice)
    db.session.add(issue)
    db.session.commit()
    first = issue.etag
    assert first == f"{issue.issue_id}-1"
    issue.change({"title": "u", "assigned_to": alice.id})
    db.session.commit()
    assert issue.etag == f"{issue.issue_id}-2"
    assert issue.assigned_to_id == alice.id


@pytest.mark.parametrize("pk", [0, -1, MAX_ID + 1, 12345])
def test_get_or_404_refuses_missing_and_out_of_range_ids(app, pk):
    with pytest.raises(NotFound, match=f"no user {pk}"):
        get_or_404(User, pk)


@pytest.fixture
def at_0002(tmp_path, request):
    """An app on a database migrated up to 0002 only (before people had rights and
    preferences): PostgreSQL on the PostgreSQL run, else SQLite."""
    with app_at("0002", tmp_path, request) as app:
        yield app


def add_users_at_0002(*users: tuple[str, str]) -> None:
    columns = "username, email, first_name, last_name, password_hash, token_generation"
    for username, email in users:
        db.session.execute(
            sa.text(f"INSERT INTO users ({columns}) VALUES (:u, :e, '', '', '-', 0)"),
            {"u": username, "e": email},
        )
    db.session.commit()


@pytest.mark.parametrize(
    ("users", "admin"),
    [
        ([("indra", "indra@example.com"), ("bob", "bob@example.com")], "indra"),
        ([("indra", "indra@example.com"), ("admin", "admin@localhost")], "admin"),
        ([("admin", "admin@example.com"), ("bob", "bob@example.com")], "admin"),
        ([("bob", "bob@example.com"), ("admin", "admin@example.com")], "bob"),
    ],
    ids=["oldest", "made-by-first-user", "oldest-named-admin", "admin-name-not-first-users"],
)
def test_migrating_people_makes_one_admin_and_turns_every_preference_on(at_0002, users, admin):
    add_users_at_0002(*users, ("carol", "carol@example.com"))
    upgrade(directory=str(ROOT / "migrations"), revision="head")
    rows = db.session.execute(sa.select(User).order_by(User.id)).scalars().all()
    assert [user.username for user in rows if user.is_admin] == [admin]
    assert all(user.active and user.notify_assignments and user.notify_digest for user in rows)
