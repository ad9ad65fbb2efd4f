"""SQLite: the search index's vocabulary, so that a word's start is asked as the words it begins.

FTS5 answers a prefix query (`"crash"*`) by merging every issue of every word the prefix begins
into one list before its first answer: 15 ms for `crash` at a million issues, where the word
itself is read as it goes (5 ms for `label=wontfix&q=crash` to count 10,001). `issues_fts_terms`
is FTS5's own vocabulary table of the index (`fts5vocab`, one row per occurrence, in the order of
the words; it stores nothing), where finding the first word at or after a text is a seek: SIT
finds the few words a start begins and asks for them as an OR, which FTS5 reads lazily
(sit/search.py, `fts5_start`).

PostgreSQL has nothing to do.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("CREATE VIRTUAL TABLE issues_fts_terms USING fts5vocab(issues_fts, instance)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE issues_fts_terms")
