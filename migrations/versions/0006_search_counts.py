"""Counting search matches: PostgreSQL keeps a narrow copy of each issue's words.

To tell whether a search has more than 10,000 matches, PostgreSQL tests rows until it finds
10,001 (its GIN index answers only whole bitmaps, slower still). A row of `issues` is about 430
bytes; `issues_words` holds each issue's id and its words without positions (about 150): the
same count reads a third of the pages (42 ms -> 24 ms for "crash login" at a million issues,
bench/RESULTS.md). A trigger keeps it; it is filled here for the issues that exist.

SQLite has nothing to do: FTS5 counts from its own index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

POSTGRESQL_UPGRADE = [
    """CREATE TABLE issues_words (
        id integer PRIMARY KEY REFERENCES issues (id) ON DELETE CASCADE,
        words tsvector NOT NULL)""",
    """CREATE FUNCTION issues_words_copy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO issues_words (id, words) VALUES (NEW.id, strip(NEW.search_vector))
        ON CONFLICT (id) DO UPDATE SET words = EXCLUDED.words;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER issues_words_copy AFTER INSERT OR UPDATE OF title, description ON issues
        FOR EACH ROW EXECUTE FUNCTION issues_words_copy()""",
    "INSERT INTO issues_words (id, words) SELECT id, strip(search_vector) FROM issues",
]
POSTGRESQL_DOWNGRADE = [
    "DROP TRIGGER issues_words_copy ON issues",
    "DROP FUNCTION issues_words_copy()",
    "DROP TABLE issues_words",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_DOWNGRADE:
            op.execute(statement)
