"""Labels in SQLite's search index: `?label=` walks FTS5's lists of issues, with `q` or alone.

FTS5 knew each issue's status, assignee and creator (`facets`, migration 0007) but not its
labels: a listing with labels looked each issue's labels up in `issue_labels` (2 us an issue),
and counting them read every match of a rare combination (`label=wontfix&q=crash`: 295 ms at a
million issues, `label=bug&label=ui`: 150, `label=none&q=crash`: 84). Now `facets` has one word
per label too, `labelN` for label id N, or `labelnone`, each after U+E000 like the others, in
the order of the ids. Triggers on `issue_labels` rewrite an issue's index entry when it gains or
loses a label (FTS5 without content changes a row only by a delete with its old words and an
insert): a label added or taken off, a set replaced, a label deleted (its issues lose it, one
by one, by the foreign key's cascade). A renamed label keeps its id, so its word.

The order of a delete matters. SQLite deletes a row of `issues`, then its labelling rows by the
cascade (their triggers find no issue, and leave the index alone), then runs the issue's AFTER
DELETE triggers: the issue's index entry goes BEFORE the delete, while its labels are there
to name the words it was written with.

SIT never updates a row of `issue_labels` (a set is replaced by deletes and inserts); no
trigger follows an UPDATE of it. PostgreSQL has nothing to do.

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


def upgrade() -> None:
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
    """Back to migration 0007's index, made by its own statements."""
    if op.get_bind().dialect.name == "sqlite":
        filters = op.get_context().script.get_revision("0007").module
        for statement in [*LABEL_TRIGGERS, *filters.SQLITE_UPGRADE]:
            op.execute(statement)
