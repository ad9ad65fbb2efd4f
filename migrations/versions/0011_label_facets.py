"""Labels in the search indexes: `?label=` with `q`, several together and `none` intersect lists.

SQLite: FTS5 knew each issue's status, assignee and creator (`facets`, migration 0007) but
not its labels: a listing with labels looked each issue's labels up in `issue_labels` (2 us
an issue), and counting them read every match of a rare combination (`label=wontfix&q=crash`:
295 ms at a million issues, `label=bug&label=ui`: 150, `label=none&q=crash`: 84). Now `facets`
has one word per label too, `labelN` for label id N, or `labelnone`, each after U+E000 like
the others, in the order of the ids. Triggers on `issue_labels` rewrite an issue's index
entry when it gains or loses a label (FTS5 without content changes a row only by a delete
with its old words and an insert): a label added or taken off, a set replaced, a label
deleted (its issues lose it, one by one, by the foreign key's cascade). A renamed label
keeps its id, so its word.

The order of a delete matters. SQLite deletes a row of `issues`, then its labelling rows by the
cascade (their triggers find no issue, and leave the index alone), then runs the issue's AFTER
DELETE triggers: the issue's index entry goes BEFORE the delete, while its labels are there
to name the words it was written with.

PostgreSQL: `issues_words`, each issue's words without positions (migration 0006), gains the
same words as lexemes (`labelN`, `labelnone`, after U+E000: no word a user types starts so)
and a GIN index, so that a search with labels and several labels together are counted by
intersecting the index's lists (`label=wontfix&q=crash` read the bitmap of every `crash`
issue, a third of them, each looked up in `issue_labels`: 308 ms). Its triggers copy them as
the words are copied, and again when an issue gains or loses a label.

SIT never updates a row of `issue_labels` (a set is replaced by deletes and inserts); no
trigger follows an UPDATE of it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

MARK = "char(57344)"  # U+E000, as in migration 0007 and sit/search.py's FACET


def label_words(labels: str) -> str:
    """The `facets` words of the label ids `labels` selects (a SELECT of one column), in order;
    `labelnone` when it selects none."""
    words = f"SELECT group_concat({MARK} || 'label' || id, ' ') FROM ({labels} ORDER BY 1)"
    return f"coalesce(({words}), {MARK} || 'labelnone')"


def carried(issue: str) -> str:
    return f"SELECT label_id AS id FROM issue_labels WHERE issue_id = {issue}"


def fts_row(row: str, labels: str) -> str:
    """An index row of `issues` row `row`, with the labels `labels` selects."""
    filters = op.get_context().script.get_revision("0007").module.facets(row)
    return f"{row}.id, {row}.title, {row}.description, {filters} || ' ' || {label_words(labels)}"


COLUMNS = "rowid, title, description, facets"


def rewrite(issue: str, before: str) -> str:
    """Statements that rewrite the index entry of issue `issue`, which carried the labels
    `before` selects and carries those of `issue_labels` now; none if the issue is gone."""
    return f"""
        INSERT INTO issues_fts(issues_fts, {COLUMNS})
        SELECT 'delete', {fts_row("issues", before)} FROM issues WHERE id = {issue};
        INSERT INTO issues_fts({COLUMNS})
        SELECT {fts_row("issues", carried("issues.id"))} FROM issues WHERE id = {issue};"""


def triggers() -> list[str]:
    entry_new, entry_old = fts_row("new", carried("new.id")), fts_row("old", carried("old.id"))
    gained = f"{carried('new.issue_id')} AND label_id != new.label_id"
    lost = f"{carried('old.issue_id')} UNION SELECT old.label_id"
    return [
        f"""CREATE TRIGGER issues_fts_insert AFTER INSERT ON issues BEGIN
            INSERT INTO issues_fts({COLUMNS}) VALUES ({entry_new});
        END""",
        f"""CREATE TRIGGER issues_fts_delete BEFORE DELETE ON issues BEGIN
            INSERT INTO issues_fts(issues_fts, {COLUMNS}) VALUES ('delete', {entry_old});
        END""",
        f"""CREATE TRIGGER issues_fts_update
            AFTER UPDATE OF title, description, status, assigned_to_id, created_by_id ON issues
        BEGIN
            INSERT INTO issues_fts(issues_fts, {COLUMNS}) VALUES ('delete', {entry_old});
            INSERT INTO issues_fts({COLUMNS}) VALUES ({entry_new});
        END""",
        f"""CREATE TRIGGER issue_labels_fts_insert AFTER INSERT ON issue_labels BEGIN
            {rewrite("new.issue_id", gained)}
        END""",
        f"""CREATE TRIGGER issue_labels_fts_delete AFTER DELETE ON issue_labels BEGIN
            {rewrite("old.issue_id", lost)}
        END""",
    ]


ISSUE_TRIGGERS = [f"DROP TRIGGER issues_fts_{event}" for event in ("insert", "delete", "update")]
LABEL_TRIGGERS = [f"DROP TRIGGER issue_labels_fts_{event}" for event in ("insert", "delete")]


# PostgreSQL: what the issue's labels add to its words; migration 0006's copy, with them; an
# issue's words again when it gains or loses a label (none left when the issue is deleted: its
# row of `issues_words` goes by the cascade).
PG_MARK = "chr(57344)"
POSTGRESQL_UPGRADE = [
    f"""CREATE FUNCTION issue_label_lexemes(issue integer) RETURNS tsvector
        LANGUAGE sql STABLE AS $$
        SELECT coalesce(array_to_tsvector(array_agg({PG_MARK} || 'label' || label_id)),
                        array_to_tsvector(ARRAY[{PG_MARK} || 'labelnone']))
        FROM issue_labels WHERE issue_id = issue $$""",
    """CREATE OR REPLACE FUNCTION issues_words_copy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO issues_words (id, words)
        VALUES (NEW.id, strip(NEW.search_vector) || issue_label_lexemes(NEW.id))
        ON CONFLICT (id) DO UPDATE SET words = EXCLUDED.words;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION issues_words_relabel() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        issue integer := CASE WHEN TG_OP = 'DELETE' THEN OLD.issue_id ELSE NEW.issue_id END;
    BEGIN
        UPDATE issues_words SET words = strip(issues.search_vector) || issue_label_lexemes(issue)
        FROM issues WHERE issues.id = issue AND issues_words.id = issue;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER issues_words_relabel AFTER INSERT OR DELETE ON issue_labels
        FOR EACH ROW EXECUTE FUNCTION issues_words_relabel()""",
    "UPDATE issues_words SET words = words || issue_label_lexemes(id)",
    "CREATE INDEX ix_issues_words_words ON issues_words USING gin (words)",
]
POSTGRESQL_DOWNGRADE = [
    "DROP INDEX ix_issues_words_words",
    "DROP TRIGGER issues_words_relabel ON issue_labels",
    "DROP FUNCTION issues_words_relabel()",
    "UPDATE issues_words SET words = strip(issues.search_vector) FROM issues "
    "WHERE issues.id = issues_words.id",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRESQL_UPGRADE:
            op.execute(statement)
    if op.get_bind().dialect.name == "sqlite":
        for statement in [
            *ISSUE_TRIGGERS,
            "INSERT INTO issues_fts(issues_fts) VALUES ('delete-all')",
            *triggers(),
            f"INSERT INTO issues_fts({COLUMNS}) "
            f"SELECT {fts_row('issues', carried('issues.id'))} FROM issues",
        ]:
            op.execute(statement)


def downgrade() -> None:
    """Back to migration 0007's index, made by its own statements (SQLite), and to 0006's
    copy of the words (PostgreSQL)."""
    if op.get_bind().dialect.name == "postgresql":
        copy = op.get_context().script.get_revision("0006").module.POSTGRESQL_UPGRADE[1]
        for statement in [*POSTGRESQL_DOWNGRADE, copy.replace("CREATE", "CREATE OR REPLACE", 1)]:
            op.execute(statement)
        op.execute("DROP FUNCTION issue_label_lexemes(integer)")
    if op.get_bind().dialect.name == "sqlite":
        filters = op.get_context().script.get_revision("0007").module
        for statement in [*LABEL_TRIGGERS, *filters.SQLITE_UPGRADE]:
            op.execute(statement)
