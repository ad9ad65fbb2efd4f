"""PostgreSQL's copy of the words learns each issue's status, assignee and creator, as SQLite's
index did in migration 0007: a search with filters is counted by intersecting lists.

`q=crash login&status=C` at a million issues (14,000 matches) counted its first 10,001 by
intersecting the words' lists in the GIN index of `issues` with the 200,000 closed issues of
`ix_issues_status_id`, then testing rows of `issues`: 47 ms. Now each row of `issues_words`
also has one lexeme per filter column, `statusc`, `assignee5` (`assigneenone` for none) and
`creator7`, each after U+E000 like the labels' (migration 0011) and as SQLite's `facets` words
are spelled, and its GIN index intersects them with the words': 28 ms. The trigger that copies
an issue's words follows a change of those columns too (`issue_words` is the row of the copy).

SQLite has nothing to do: its index has them since 0007.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

MARK = "chr(57344)"  # U+E000, as in sit/search.py's FACET
FILTERS = "title, description, status, assigned_to_id, created_by_id"

POSTGRESQL_UPGRADE = [
    f"""CREATE FUNCTION issue_words(issue issues) RETURNS tsvector LANGUAGE sql STABLE AS $$
        SELECT strip(issue.search_vector) || issue_label_lexemes(issue.id)
            || array_to_tsvector(ARRAY[
                {MARK} || 'status' || lower(issue.status),
                {MARK} || 'assignee' || coalesce(issue.assigned_to_id::text, 'none'),
                {MARK} || 'creator' || coalesce(issue.created_by_id::text, 'none')]) $$""",
    """CREATE OR REPLACE FUNCTION issues_words_copy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO issues_words (id, words) VALUES (NEW.id, issue_words(NEW))
        ON CONFLICT (id) DO UPDATE SET words = EXCLUDED.words;
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE FUNCTION issues_words_relabel() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        issue integer := CASE WHEN TG_OP = 'DELETE' THEN OLD.issue_id ELSE NEW.issue_id END;
    BEGIN
        UPDATE issues_words SET words = issue_words(issues)
        FROM issues WHERE issues.id = issue AND issues_words.id = issue;
        RETURN NULL;
    END $$""",
    "DROP TRIGGER issues_words_copy ON issues",
    f"""CREATE TRIGGER issues_words_copy AFTER INSERT OR UPDATE OF {FILTERS} ON issues
        FOR EACH ROW EXECUTE FUNCTION issues_words_copy()""",
    # Every row rewritten: faster without the index, made again after.
    "DROP INDEX ix_issues_words_words",
    "UPDATE issues_words SET words = issue_words(issues) FROM issues "
    "WHERE issues.id = issues_words.id",
    "CREATE INDEX ix_issues_words_words ON issues_words USING gin (words)",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    """Back to migration 0011's copy of the words, made by its own functions."""
    if op.get_bind().dialect.name == "postgresql":
        labels = op.get_context().script.get_revision("0011").module.POSTGRESQL_UPGRADE
        copy, relabel = labels[1], labels[2].replace("CREATE", "CREATE OR REPLACE", 1)
        for statement in [
            copy,
            relabel,
            "DROP FUNCTION issue_words(issues)",
            "DROP TRIGGER issues_words_copy ON issues",
            """CREATE TRIGGER issues_words_copy AFTER INSERT OR UPDATE OF title, description
                ON issues FOR EACH ROW EXECUTE FUNCTION issues_words_copy()""",
            "UPDATE issues_words SET words = strip(issues.search_vector) "
            "|| issue_label_lexemes(issues.id) FROM issues WHERE issues.id = issues_words.id",
        ]:
            op.execute(statement)
