"""Full-text search of issues in the database: SQLite's FTS5, PostgreSQL's tsvector.

What a user types is split into words here and each word is quoted into the database's query
language, so no character a user types is ever read as query syntax. A word is a run of letters
and digits, as migration 0005 indexes the text on both databases.
"""

import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from sit.models import Issue
from sit.pagination import COUNT_CAP

WORD = re.compile(r"[^\W_]+")  # letters and digits: what both indexes call a word
# The SQLite index (migration 0005); external content: it holds no text, only the index.
FTS = sa.table("issues_fts", sa.column("rowid", sa.Integer), sa.column("issues_fts"))
SEARCH_VECTOR = sa.literal_column("issues.search_vector")  # PostgreSQL: no model maps it
# PostgreSQL: each issue's words again, narrow, to count many matches (migration 0006).
WORDS = sa.table("issues_words", sa.column("id", sa.Integer), sa.column("words"))
# What migrations 0005 and 0006 made that no model describes; the models-match-migrations
# check skips it.
NOT_MODELED = frozenset({"issues_fts", "search_vector", "ix_issues_search_vector", "issues_words"})


def words(text: str) -> list[str]:
    """The words of what a user typed, lowercased; punctuation only separates them."""
    return WORD.findall(text.lower())


def fts5_query(found: list[str], starts: bool = True) -> str:
    """Each word as an FTS5 string (a `"` doubled), `*` outside it: the word or its start (or,
    not `starts`, only the word)."""
    star = "*" if starts else ""
    return " ".join('"' + word.replace('"', '""') + '"' + star for word in found)


def tsquery(found: list[str]) -> str:
    """Each word as a quoted tsquery lexeme (`'` and `\\` escaped), `:*`: the word or its start."""
    quoted = (word.replace("\\", "\\\\").replace("'", "''") for word in found)
    return " & ".join(f"'{word}':*" for word in quoted)


def matching_ids(found: list[str], starts: bool = True) -> sa.Select[tuple[int]]:
    """SQLite: the ids of the issues that have every word (or its start), from the index."""
    return sa.select(FTS.c.rowid).where(FTS.c.issues_fts.op("MATCH")(fts5_query(found, starts)))


def at_least(connection: sa.Connection, ids: sa.Select[tuple[int]], enough: int) -> bool:
    """Whether the query has `enough` rows, read no further than that."""
    count = sa.select(sa.func.count()).select_from(ids.limit(enough).subquery())
    return connection.execute(count).scalar_one() >= enough


def at_least_matches(connection: sa.Connection, found: list[str], enough: int) -> bool:
    """Whether `enough` issues have the words, or their starts. FTS5 reads a word's issues as
    it goes, but merges every issue of every word a start begins before the first (28 ms for
    "crash" at a million issues): the issues that have the words themselves are a subset that
    often tells alone (1 ms)."""
    return at_least(connection, matching_ids(found, starts=False), enough) or at_least(
        connection, matching_ids(found), enough
    )


@dataclass(frozen=True)
class Found:
    """The issues a search finds: `where` tells them apart for the listing; `counted` is their
    ids where they are quickest to count (None: count the listing)."""

    where: sa.ColumnElement[bool]
    counted: sa.Select[tuple[int]] | None = None


def find(connection: sa.Connection, text: str, alone: bool) -> Found:
    """Issues whose title or description has every word of `text`, each as a word or the start
    of one, case-insensitive. Text without a letter or digit matches no issue. `alone`: no
    other filter narrows the listing, so its count may come from the search's own index.

    Few matches, and the listing reads them all from the full-text index and sorts them; many,
    and it walks its sort's index testing each row, which fills a page after a few rows. On
    SQLite the index tells how many (FTS5 has no statistics), and the test of one row is
    `has_words`. PostgreSQL's planner estimates it well but, given a LIMIT, walks the sort's
    index even for a word it expects in a thousand of a million issues (0 in fact: 450 ms): SIT
    takes the estimate and fences the few matches in a materialized CTE. Many matches are
    counted, up to the cap, in `issues_words`, a third of the pages of `issues` (migration 0006).
    """
    found = words(text)
    if not found:
        return Found(sa.false())
    if connection.dialect.name == "sqlite":
        if few_matches(connection, found):
            where = Issue.id.in_(matching_ids(found))
        else:
            where = sa.func.sit_has_words(Issue.title, Issue.description, " ".join(found)) == 1
        return Found(where, counted(connection, found) if alone else None)
    query = sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), tsquery(found))
    has = SEARCH_VECTOR.op("@@")(query)
    if few_matches(connection, found):
        matched = sa.select(Issue.id).where(has).cte("matched").prefix_with("MATERIALIZED")
        return Found(Issue.id.in_(sa.select(matched.c.id)))
    if not alone:
        return Found(has)
    return Found(has, sa.select(WORDS.c.id).where(WORDS.c.words.op("@@")(query)))


# PostgreSQL's estimate of how many issues a tsquery matches, from its statistics.
ESTIMATE = sa.text(
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM issues WHERE search_vector @@ to_tsquery('simple', :q)"
)


def few_matches(connection: sa.Connection, found: list[str]) -> bool:
    """Whether sorting every match costs less than testing rows in order until a page is full:
    measured on SQLite, sorting costs about 3 µs a match, testing 5 µs a row, and a page of 30
    needs 30 * issues / matches rows tested, so fewer than sqrt(50 * issues) matches are few.
    SQLite counts them that far; PostgreSQL takes the planner's estimate."""
    issues = connection.execute(sa.select(sa.func.max(Issue.id))).scalar() or 0
    enough = math.isqrt(50 * issues) + 1
    if connection.dialect.name == "sqlite":
        return not at_least_matches(connection, found, enough)
    plan = connection.execute(ESTIMATE, {"q": tsquery(found)}).scalar_one()
    return plan[0]["Plan"]["Plan Rows"] < enough


def counted(connection: sa.Connection, found: list[str]) -> sa.Select[tuple[int]]:
    """SQLite: the issues that have the words (or their starts) straight from the FTS5 index;
    those that have the words themselves when they alone are more than the count's cap."""
    exact = matching_ids(found, starts=False)
    return exact if at_least(connection, exact, COUNT_CAP + 1) else matching_ids(found)


@functools.lru_cache(maxsize=256)
def word_starts(found: str) -> list[re.Pattern[str]]:
    return [re.compile(r"(?<![^\W_])" + re.escape(word)) for word in found.split()]


def has_words(title: str, description: str, found: str) -> bool:
    """SQLite's `sit_has_words`: whether the text has each of the words (space-separated) as a
    word or the start of one; what the FTS5 index finds, for one row."""
    text = f"{title} {description}".lower()
    return all(start.search(text) for start in word_starts(found))


def is_modeled(name: str | None, type_: str) -> bool:
    """False for what migrations 0005 and 0006 made for search beside the models (FTS5's shadow
    tables included), so Alembic's comparison of models and database leaves it alone."""
    return not (name in NOT_MODELED or (type_ == "table" and (name or "").startswith("issues_fts")))


def add_row_check(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.create_function("sit_has_words", 3, has_words, deterministic=True)


def init_engine(engine: sa.Engine) -> None:
    """SQLite: give each new connection the row check `sit_has_words` (`has_words`)."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", add_row_check)
