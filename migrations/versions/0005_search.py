"""Full-text search of issues, and an index for each filter with each sort.

SQLite: an FTS5 table over the issues' title and description (external content: it holds only
the index), kept by triggers. PostgreSQL: a generated tsvector column with a GIN index. Both are
built here for the issues that exist. A word is a run of letters and digits on both databases
(sit/search.py splits what a user types the same way).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SINGLE_COLUMN = ("assigned_to_id", "created_by_id", "status", "created_at", "updated_at")
# Each filter (or none) with each sort, id last as the listing's tie-breaker (sit/models.py).
INDEXES = [
    ("status", "id"),
    ("assigned_to_id", "id"),
    ("created_by_id", "id"),
    ("created_at", "id"),
    ("updated_at", "id"),
    ("status", "created_at", "id"),
    ("status", "updated_at", "id"),
    ("assigned_to_id", "created_at", "id"),
    ("assigned_to_id", "updated_at", "id"),
    ("created_by_id", "created_at", "id"),
    ("created_by_id", "updated_at", "id"),
]

SQLITE_UPGRADE = [
    # remove_diacritics 0: as PostgreSQL's 'simple' configuration, "é" is not "e".
    """CREATE VIRTUAL TABLE issues_fts USING fts5(
        title, description, content='issues', content_rowid='id',
        tokenize='unicode61 remove_diacritics 0')""",
    """CREATE TRIGGER issues_fts_insert AFTER INSERT ON issues BEGIN
        INSERT INTO issues_fts(rowid, title, description)
        VALUES (new.id, new.title, new.description);
    END""",
    """CREATE TRIGGER issues_fts_delete AFTER DELETE ON issues BEGIN
        INSERT INTO issues_fts(issues_fts, rowid, title, description)
        VALUES ('delete', old.id, old.title, old.description);
    END""",
    """CREATE TRIGGER issues_fts_update AFTER UPDATE OF title, description ON issues BEGIN
        INSERT INTO issues_fts(issues_fts, rowid, title, description)
        VALUES ('delete', old.id, old.title, old.description);
        INSERT INTO issues_fts(rowid, title, description)
        VALUES (new.id, new.title, new.description);
    END""",
    "INSERT INTO issues_fts(issues_fts) VALUES ('rebuild')",
]
SQLITE_DOWNGRADE = [
    *(f"DROP TRIGGER issues_fts_{event}" for event in ("insert", "delete", "update")),
    "DROP TABLE issues_fts",
]
# A tsvector holds at most 1 MiB, which a description of distinct words within SIT's 1 MiB
# body limit can pass: PostgreSQL indexes the first 200,000 characters (at most about 500 KB).
POSTGRESQL_UPGRADE = [
    """ALTER TABLE issues ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', regexp_replace(left(title || ' ' || description, 200000),
                                             '[^[:alnum:]]+', ' ', 'g'))) STORED""",
    "CREATE INDEX ix_issues_search_vector ON issues USING gin (search_vector)",
]
POSTGRESQL_DOWNGRADE = ["ALTER TABLE issues DROP COLUMN search_vector"]


def upgrade() -> None:
    for column in SINGLE_COLUMN:
        op.drop_index(f"ix_issues_{column}", "issues")
    for columns in INDEXES:
        op.create_index(f"ix_issues_{'_'.join(columns)}", "issues", list(columns))
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_UPGRADE if sqlite else POSTGRESQL_UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_DOWNGRADE if sqlite else POSTGRESQL_DOWNGRADE:
        op.execute(statement)
    for columns in INDEXES:
        op.drop_index(f"ix_issues_{'_'.join(columns)}", "issues")
    for column in SINGLE_COLUMN:
        op.create_index(f"ix_issues_{column}", "issues", [column])
