"""The models and the migrations that build their tables."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from werkzeug.exceptions import NotFound

from sit.extensions import db
from sit.models import MAX_ID, Issue, User, get_or_404


def test_migrations_build_exactly_the_models_and_the_job_stores_tables(app):
    expected = sa.MetaData()
    for table in db.metadata.tables.values():
        table.to_metadata(expected)
    SQLAlchemyJobStore(engine=db.engine).jobs_t.to_metadata(expected)
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), expected)
    assert differences == []


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
