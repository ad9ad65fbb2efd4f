"""Full-text search of issues in the database: SQLite's FTS5, PostgreSQL's tsvector.

What a user types is split into words here and each word is quoted into the database's query
language, so no character a user types is ever read as query syntax. A word is a run of letters
and digits, as migration 0004 indexes the text on both databases.
"""

import re

import sqlalchemy as sa

from sit.models import Issue

WORD = re.compile(r"[^\W_]+")  # letters and digits: what both indexes call a word
# The SQLite index (migration 0004); external content: it holds no text, only the index.
FTS = sa.table("issues_fts", sa.column("rowid", sa.Integer), sa.column("issues_fts"))
SEARCH_VECTOR = sa.literal_column("issues.search_vector")  # PostgreSQL: no model maps it
# What migration 0004 made that no model describes; the models-match-migrations check skips it.
NOT_MODELED = frozenset({"issues_fts", "search_vector", "ix_issues_search_vector"})


def words(text: str) -> list[str]:
    """The words of what a user typed, lowercased; punctuation only separates them."""
    return WORD.findall(text.lower())


def fts5_query(found: list[str]) -> str:
    """Each word as an FTS5 string (a `"` doubled), `*` outside it: the word or its start."""
    return " ".join('"' + word.replace('"', '""') + '"*' for word in found)


def tsquery(found: list[str]) -> str:
    """Each word as a quoted tsquery lexeme (`'` and `\\` escaped), `:*`: the word or its start."""
    quoted = (word.replace("\\", "\\\\").replace("'", "''") for word in found)
    return " & ".join(f"'{word}':*" for word in quoted)


def matching_ids(found: list[str]) -> sa.Select[tuple[int]]:
    """SQLite: the ids of the issues that have every word, from the FTS5 index."""
    return sa.select(FTS.c.rowid).where(FTS.c.issues_fts.op("MATCH")(fts5_query(found)))


def matches(dialect: str, text: str) -> sa.ColumnElement[bool]:
    """Issues whose title or description has every word of `text`, each as a word or the start
    of one, case-insensitive. Text without a letter or digit matches no issue."""
    found = words(text)
    if not found:
        return sa.false()
    if dialect == "sqlite":
        return Issue.id.in_(matching_ids(found))
    query = sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), tsquery(found))
    return SEARCH_VECTOR.op("@@")(query)


def is_modeled(name: str | None, type_: str) -> bool:
    """False for what migration 0004 made for search beside the models (FTS5's shadow tables
    included), so Alembic's comparison of models and database leaves it alone."""
    return not (name in NOT_MODELED or (type_ == "table" and (name or "").startswith("issues_fts")))
