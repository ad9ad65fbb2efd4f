"""Full-text search of issues in the database: SQLite's FTS5, PostgreSQL's tsvector.

What a user types is split into words here and each word is quoted into the database's query
language, so no character a user types is ever read as query syntax. A word is a run of letters
and digits, as migration 0005 indexes the text on both databases.
"""

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import TSQUERY

from sit.extensions import db
from sit.models import Issue
from sit.pagination import COUNT_CAP, capped_count, count_up_to

if TYPE_CHECKING:
    from sit.labels import Labelled

WORD = re.compile(r"[^\W_]+")  # letters and digits: what both indexes call a word
# The SQLite index (migration 0007); contentless: it holds no text, only the index.
FTS = sa.table("issues_fts", sa.column("rowid", sa.Integer), sa.column("issues_fts"))
# What the index calls each filter column and the labels, after a private-use character: a word
# no text has, nor the start of one (FTS5 reads U+E000 as a letter; WORD does not). SQLite's
# `facets` column (migrations 0007 and 0011), PostgreSQL's `issues_words` (0011 and 0012).
FACET = "\ue000"
FACETS = {
    "status": "status",
    "assigned_to_id": "assignee",
    "created_by_id": "creator",
    "label": "label",
}
ROW_TESTS = 1_000  # a filter that leaves this few issues has each tested (SQLite: 5 ms at most)
# SQLite: a search's matches are first sampled in this many windows of this many ids, spread
# evenly over them all (`far_more`). Each window costs FTS5 a seek into every segment of the
# index for each word and facet (0.75 M instructions at a million issues, 21 segments), so the
# windows are few and wide: 8 of 8,000 ids cost 0.6 of what 16 of 4,000 did (callgrind).
SAMPLES, SAMPLE_WIDTH = 8, 8_000
# PostgreSQL tests each row of its windows (`words_sample_says_more`): 8 of 1,000 ids read 465
# pages, 5 ms at a million issues; SQLite's wider windows would cost it what a count does.
WORDS_SAMPLE_WIDTH = 1_000
SEARCH_VECTOR = sa.literal_column("issues.search_vector")  # PostgreSQL: no model maps it
# SQLite: the index's words in order, one row per occurrence (migration 0013): the first at or
# after a text is found by a seek; a start that begins at most BEGUN of them is asked as them.
TERMS = sa.text("SELECT term FROM issues_fts_terms WHERE term >= :after LIMIT 1")
BEGUN = 8
# PostgreSQL: each issue's words again, narrow, to count many matches (migration 0006).
WORDS = sa.table("issues_words", sa.column("id", sa.Integer), sa.column("words"))
# What migrations 0005 to 0007 and 0011 made that no model describes; the models-match-
# migrations check skips it.
NOT_MODELED = frozenset(
    {
        "issues_fts",
        "search_vector",
        "ix_issues_search_vector",
        "issues_words",
        "ix_issues_words_words",
    }
)


def words(text: str) -> list[str]:
    """The words of what a user typed, lowercased; punctuation only separates them."""
    return WORD.findall(text.lower())


def facet(column: str, value: Any) -> str:
    """The word the search index has for an issue whose `column` is `value`, as migrations
    0007, 0011 and 0012 write it: U+E000 then `statusc`, `assignee5`, `assigneenone`, `label3`
    (label id 3), `labelnone` (no label)..."""
    return FACET + FACETS[column] + ("none" if value is None else str(value).lower())


def fts5_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def fts5_query(found: list[str], facets: list[str], starts: bool = True) -> str:
    """Each word as an FTS5 string (a `"` doubled), with its start unless not `starts`
    (`fts5_start`); and each facet, in the `facets` column only (a title could have the word
    too); all of them (AND)."""
    strings = [fts5_start(word) if starts else fts5_string(word) for word in found]
    return " AND ".join(strings + [f"facets : {fts5_string(facet)}" for facet in facets])


def fts5_start(word: str) -> str:
    """SQLite: a word or its start as FTS5 is asked for it. One or two letters: a prefix query
    (`"cr"*`), which the prefix index serves. Longer: the words of the index it begins, as an
    OR of strings (`("crash" OR "crashes")`), which FTS5 reads lazily, where a prefix query
    merges every issue of every word it begins before its first answer (`label=wontfix&q=crash`
    counted in 5 ms against 15 at a million issues); a prefix query still where they are more
    than BEGUN, or none (FTS5 folds a few characters otherwise than Python's `lower`)."""
    begun = begun_words(word) if len(word) > 2 else None
    if not begun:
        return fts5_string(word) + "*"
    if begun == [word]:
        return fts5_string(word)  # as the word itself is asked (`listed_matches`)
    return "(" + " OR ".join(fts5_string(term) for term in begun) + ")"


def begun_words(word: str) -> list[str] | None:
    """SQLite: the words of the index that `word` begins, itself included if it is one; None
    for more than BEGUN. Each is found by seeking the index's vocabulary (`TERMS`) past the one
    before (0.1 to 0.4 ms a seek at a million issues)."""
    connection = db.session.connection()
    begun: list[str] = []
    after = word
    while (term := connection.execute(TERMS, {"after": after}).scalar()) and term.startswith(word):
        if len(begun) == BEGUN:
            return None
        begun.append(term)
        after = term + "\x01"  # the next word: no word has a control character
    return begun


def tsquery(found: list[str], starts: bool = True) -> str:
    """Each word as a quoted tsquery lexeme (`'` and `\\` escaped), `:*` after it: the word or its
    start (or, not `starts`, only the word)."""
    star = ":*" if starts else ""
    quoted = (word.replace("\\", "\\\\").replace("'", "''") for word in found)
    return " & ".join(f"'{word}'{star}" for word in quoted)


def matching_ids(found: list[str], facets: list[str], starts: bool = True) -> sa.Select[tuple[int]]:
    """SQLite: the ids of the issues that have every word (or its start) and every facet, from
    the index."""
    return matches(fts5_query(found, facets, starts))


def matches(query: str) -> sa.Select[tuple[int]]:
    """SQLite: the ids of the issues the index finds for an FTS5 query."""
    return sa.select(FTS.c.rowid).where(FTS.c.issues_fts.op("MATCH")(query))


@dataclass(frozen=True)
class Found:
    """The issues a search finds: `where` tells them apart for the listing; `count`, quicker
    than counting the listing, how many they are (None: more than COUNT_CAP)."""

    where: sa.ColumnElement[bool]
    count: Callable[[], int | None] | None = None


def find(
    connection: sa.Connection,
    text: str | None,
    filters: dict[str, Any],
    labels: "Labelled | None" = None,
) -> Found:
    """Issues whose title or description has every word of `text`, each as a word or the start
    of one, case-insensitive, and the `labels` (the listing's `?label=` filters; their rows'
    tests included). Text without a letter or digit matches no issue; no text (None, SQLite
    only), any. `filters` are the listing's others, the value each column must have: SQLite's
    index knows them and the labels too.

    Few matches, and the listing reads them all from the full-text index and sorts them; many,
    and it walks its sort's index testing each row, which fills a page after a few rows; on
    SQLite, in between, it walks that index looking each row up in a list of the matches.
    """
    found = words(text or "")
    if text is not None and not found:
        return Found(sa.false())
    issues = last_id()
    tests = labels.where if labels is not None else []
    facets = list(labels.facets) if labels is not None else []
    if connection.dialect.name == "sqlite":
        return find_in_fts5(found, filters, facets, tests, issues)
    return find_in_tsvector(connection, found, filters, facets, tests, issues)


def last_id() -> int:
    """The largest issue id: how many issues there are, give or take the deleted ones."""
    return db.session.connection().execute(sa.select(sa.func.max(Issue.id))).scalar() or 0


def find_in_fts5(
    found: list[str],
    filters: dict[str, Any],
    labels: list[str],
    label_tests: list[sa.ColumnElement[bool]],
    issues: int,
) -> Found:
    """SQLite: the issues with the words, the filters and the labels (`labels`: their facets;
    `label_tests`: each row's test of them). A filter that leaves few issues has each of them
    tested (`has_words`, 5 us a row). Else FTS5 counts the issues with the words and every
    facet, as far as X-Total-Count needs (FTS5 has no statistics to estimate it), listing them
    as it goes (`listed_matches`), and `page_plan` chooses; a sample first tells when they are
    far more (`far_more`)."""
    tested = sa.and_(sa.true(), *label_tests)
    if found:
        # The labels' tests first, a lookup of 1 us against has_words' 5: in one CASE, since
        # SQLite puts a term with a subquery last (`label=wontfix&q=crash` tested 2,750 rows'
        # words for a page, 14 ms at a million issues).
        has = sa.func.sit_has_words(Issue.title, Issue.description, " ".join(found)) == 1
        tested = sa.case((tested, has), else_=False) if label_tests else has
    if few_left(filters):
        return Found(tested)
    facets = [facet(column, value) for column, value in filters.items()] + labels
    if far_more(found, facets, issues):
        return Found(tested, lambda: None)
    matches, ids = listed_matches(found, facets, COUNT_CAP + 1)
    count = matches if ids is not None else None
    plan = page_plan(matches, issues) if ids is not None else "tested"
    if plan == "tested":
        return Found(tested, lambda: count)
    listed = sa.select(sa.func.json_each(ids).table_valued("value").c.value)
    # `id + 0` is no index's column: SQLite walks the sort's index, looking each row up in the
    # list of matches it makes first, instead of reading the matches and sorting them.
    return Found((Issue.id + 0 if plan == "probed" else Issue.id).in_(listed), lambda: count)


def few_left(filters: dict[str, Any]) -> bool:
    """Whether the filters leave at most ROW_TESTS issues: testing each of them costs less than
    reading the index's lists of the words (on PostgreSQL, a start such as `crash:*` gathers
    every issue of every word it begins: `q=crash&assigned_to=5`, 23 ms at a million issues
    by the index, 8 by the rows)."""
    filtered = sa.select(Issue.id).where(*Issue.having(filters))
    return bool(filters) and count_up_to(filtered, ROW_TESTS + 1) <= ROW_TESTS


# SQLite: how many issues the index finds, no more than :cap, and their ids as a JSON array.
LISTED = sa.text(
    "SELECT count(*), json_group_array(rowid) FROM"
    " (SELECT rowid FROM issues_fts WHERE issues_fts MATCH :query LIMIT :cap)"
)


def listed_matches(found: list[str], facets: list[str], cap: int) -> tuple[int, str | None]:
    """SQLite: how many issues have the words (or their starts) and the facets, counted no
    further than `cap`, and below it their ids, a JSON array: the page looks its rows up in that
    list rather than asking the index again (`label=wontfix&q=crash&status=O`, 8,151 of a
    million issues: 12 ms each time). Where a word begins others (`fts5_start`), the issues
    with the words themselves first: a subset that often tells alone."""
    exact, starts = fts5_query(found, facets, starts=False), fts5_query(found, facets)
    if starts != exact and count_up_to(matches(exact), cap) >= cap:
        return cap, None
    count, ids = count_and_list(starts, cap)
    return count, ids if count < cap else None


def count_and_list(query: str, cap: int) -> tuple[int, str]:
    """SQLite: how many issues the index finds for an FTS5 query, no more than `cap`, and
    their ids, a JSON array."""
    return tuple(db.session.connection().execute(LISTED, {"query": query, "cap": cap}).one())


def far_more(found: list[str], facets: list[str], issues: int) -> bool:
    """SQLite: whether a sample says that more than COUNT_CAP issues have the words and the
    facets (filters and labels), with a margin. FTS5 keeps no statistics to estimate it, and
    counting 10,001 of a rare combination of common lists reads many more of their issues
    (500,000 for `crash login` closed). The sample counts the matches of the words themselves
    (a subset of their starts': FTS5 reads them lazily) in SAMPLES windows of SAMPLE_WIDTH ids
    spread evenly over the `issues` ids, and stops as soon as it has `enough` of them: dense
    matches tell within the first window (`label=none`, a third of the issues: 0.24 ms at a
    million issues, against 3.9 for every window). Matches spread over the ids independently
    of the windows are a Poisson count: 5 deviations under it, fewer than COUNT_CAP pass for
    more once in 3 million; matches bunched in runs of ids (a bulk import) widen that. Only
    where the windows hold at most half the ids: below, counting costs as little."""
    starts = windows(issues, SAMPLE_WIDTH)
    if starts is None:
        return False
    sampled = SAMPLES * SAMPLE_WIDTH
    query = fts5_query(found, facets, starts=False)
    sample = {"starts": json.dumps(starts), "query": query, "width": SAMPLE_WIDTH}
    sample["enough"] = enough(sampled, issues)
    matches = db.session.connection().execute(SAMPLE, sample).scalar_one()
    return says_more(matches, sampled, issues)


# SQLite: how many issues in windows of `width` ids from each of `starts` (a JSON array) match
# the query, counted no further than `enough`: one statement whatever the windows (a UNION of a
# SELECT each cost a request as much to build as to run, `bench/RESULTS.md`, at scale); CROSS
# JOIN: the windows first, each searched by the index within its ids.
SAMPLE = sa.text(
    "SELECT count(*) FROM (SELECT 1 FROM json_each(:starts) AS window CROSS JOIN issues_fts"
    " WHERE issues_fts MATCH :query"
    " AND issues_fts.rowid BETWEEN window.value AND window.value + :width - 1 LIMIT :enough)"
)


def windows(issues: int, width: int) -> list[int] | None:
    """The first ids of SAMPLES windows of `width` ids, spread evenly over `issues` ids; None
    where they would hold more than half of the ids: counting costs as little."""
    if width < 1 or issues < 2 * SAMPLES * width:
        return None
    step = issues // SAMPLES
    return list(range(step // 2, step * SAMPLES, step))


def enough(sampled: int, issues: int) -> int:
    """The fewest matches among `sampled` of `issues` ids that say more than COUNT_CAP match
    (`says_more`): a sample can stop there. They are the first whole number past the root of
    m - 5 sqrt(m) = COUNT_CAP * sampled / issues."""
    share = COUNT_CAP * sampled / issues
    return math.floor(((5 + math.sqrt(25 + 4 * share)) / 2) ** 2) + 1


def says_more(matches: float, sampled: int, issues: int) -> bool:
    """Whether `matches` among `sampled` of `issues` ids say that more than COUNT_CAP issues
    match: 5 deviations under them (a Poisson count), fewer than COUNT_CAP pass for more once in
    3 million."""
    return (matches - 5 * matches**0.5) * issues / sampled > COUNT_CAP


# PostgreSQL's estimate of how many issues a tsquery matches, from its statistics.
ESTIMATE = sa.text(
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM issues WHERE search_vector @@ to_tsquery('simple', :q)"
)


def find_in_tsvector(
    connection: sa.Connection,
    found: list[str],
    filters: dict[str, Any],
    labels: list[str],
    label_tests: list[sa.ColumnElement[bool]],
    issues: int,
) -> Found:
    """PostgreSQL. The planner estimates the matches well but, given a LIMIT, walks the sort's
    index even for a word it expects in a thousand of a million issues (0 in fact: 450 ms): SIT
    takes the estimate and fences few matches in a materialized CTE. Matches are counted, and
    the few found, in `issues_words`, narrower than `issues` (migration 0006), whose GIN index
    intersects the lists of the words, of the `labels` (their lexemes, 0011) and of the
    `filters` (0012); many, the words themselves first (`words_first`), and the planner's
    estimate may spare the count (`capped_count`). On `issues` the planner scanned every row
    for few matches at 10,000 issues (`q=crash login`: 7.9 ms, against 1.7 by the index), and
    counted them by scanning again."""
    text = tsquery(found)
    has = SEARCH_VECTOR.op("@@")(to_tsquery(text))
    facets = [facet(column, value) for column, value in filters.items()] + labels

    def asked(starts: bool) -> sa.ColumnElement[Any]:
        """The tsquery of `issues_words`: the words (with their starts), filters and labels."""
        query = to_tsquery(tsquery(found, starts))
        return query.op("&&")(lexemes(facets)) if facets else query

    plan = connection.execute(ESTIMATE, {"q": text}).scalar_one()
    if few_matches(plan[0]["Plan"]["Plan Rows"], issues):
        matched = words_matching(asked(True)).cte("matched").prefix_with("MATERIALIZED")
        fenced = sa.and_(Issue.id.in_(sa.select(matched.c.id)), *label_tests)
        return Found(fenced, lambda: count_words(asked(True), issues))
    if few_left(filters):
        return Found(sa.and_(has, *label_tests))  # the listing counts its rows
    many = sa.and_(has, *label_tests)
    return Found(many, lambda: words_first(lambda starts: count_words(asked(starts), issues)))


def count_words(query: sa.ColumnElement[Any], issues: int | None = None) -> int | None:
    """PostgreSQL: how many issues' words in `issues_words` match the tsquery (None: more than
    COUNT_CAP), as `capped_count` counts, sampled first where the planner expects more than
    COUNT_CAP but not far more (`words_sample_says_more`): counting 10,001 of them makes GIN
    gather every issue of each of the tsquery's lexemes first (`label=bug&label=ui`, 37,000 of
    a million issues: 38 ms, against 4.5 for the sample). `issues`: `last_id()`, where the
    caller has it."""
    return capped_count(
        words_matching(query), lambda planned: words_sample_says_more(query, planned, issues)
    )


def words_matching(query: sa.ColumnElement[Any]) -> sa.Select[tuple[int]]:
    """PostgreSQL: the ids of the issues whose words in `issues_words` match the tsquery."""
    return sa.select(WORDS.c.id).where(WORDS.c.words.op("@@")(query))


def words_sample_says_more(
    query: sa.ColumnElement[Any], planned: float, issues: int | None = None
) -> bool:
    """PostgreSQL: whether the issues' words in SAMPLES windows of WORDS_SAMPLE_WIDTH ids, each
    row tested (`ts_match_vq`, what `@@` calls, which no index serves) until `enough` match,
    say that more than COUNT_CAP match (`says_more`). Only where the planner's estimate,
    `planned`, were it the sample's count, would say so: else the sample could not tell, and
    costs a count nothing."""
    issues = last_id() if issues is None else issues
    starts = windows(issues, WORDS_SAMPLE_WIDTH)
    sampled = SAMPLES * WORDS_SAMPLE_WIDTH
    if starts is None or not says_more(planned * sampled / issues, sampled, issues):
        return False
    width = WORDS_SAMPLE_WIDTH - 1
    within = sa.or_(*(WORDS.c.id.between(start, start + width) for start in starts))
    tested = sa.func.ts_match_vq(WORDS.c.words, query)
    found = sa.select(WORDS.c.id).where(within, tested).limit(enough(sampled, issues))
    sample = sa.select(sa.func.count()).select_from(found.subquery())
    return says_more(db.session.connection().execute(sample).scalar_one(), sampled, issues)


def to_tsquery(text: str) -> sa.ColumnElement[Any]:
    return sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), text)


def words_first(count: Callable[[bool], int | None]) -> int | None:
    """How many issues have the words or their starts (None: more than COUNT_CAP), `count`ed
    (True: with their starts). First the issues that have the words themselves: a subset that
    often tells alone, and that the index reads without gathering every issue of every word a
    start begins (PostgreSQL, `label=wontfix&q=crash` at a million issues: 12 ms against 27,
    `q=crash login&status=C`: 47 against 93)."""
    return None if count(False) is None else count(True)


def lexemes(facets: list[str]) -> sa.ColumnElement[Any]:
    """PostgreSQL: a tsquery of each of these words (at least one) of `issues_words` as it is
    (no parser, which would drop U+E000)."""
    return sa.cast(" & ".join(f"'{facet}'" for facet in facets), TSQUERY)  # no ' to escape


def page_plan(matches: int, issues: int) -> str:
    """SQLite: the cheapest way to a page of 30 of at most COUNT_CAP matches, by what each
    costs at a million issues: "sorted" reads every match from the index, then its row, and
    sorts them (4.5 µs a match); "probed" lists the matches (0.15 µs each) and walks the sort's
    index until 31 are on the list (0.15 µs a row); "tested" walks it testing each row with
    `has_words` (5 µs a row). 31 matches are about 31 * issues / matches rows into the index.
    More matches than COUNT_CAP are "tested": their list could be every issue."""
    walked = 31 * issues / max(matches, 1)
    costs = {"sorted": 4.5 * matches, "probed": 0.15 * (matches + walked), "tested": 5 * walked}
    return min(costs, key=costs.__getitem__)


def few_matches(matches: int, issues: int) -> bool:
    """PostgreSQL: whether sorting every match costs less than testing rows in order until a
    page is full: fewer than sqrt(50 * issues) matches (SQLite's costs, before "probed")."""
    return matches * matches < 50 * issues


@functools.lru_cache(maxsize=256)
def word_starts(found: str) -> list[re.Pattern[str]]:
    return [re.compile(r"(?<![^\W_])" + re.escape(word)) for word in found.split()]


def has_words(title: str, description: str, found: str) -> bool:
    """SQLite's `sit_has_words`: whether the text has each of the words (space-separated) as a
    word or the start of one; what the FTS5 index finds, for one row."""
    text = f"{title} {description}".lower()
    return all(start.search(text) for start in word_starts(found))


def is_modeled(name: str | None, type_: str) -> bool:
    """False for what migrations 0005 to 0007 made for search beside the models (FTS5's shadow
    tables included), so Alembic's comparison of models and database leaves it alone."""
    return not (name in NOT_MODELED or (type_ == "table" and (name or "").startswith("issues_fts")))


def add_row_check(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.create_function("sit_has_words", 3, has_words, deterministic=True)


def init_engine(engine: sa.Engine) -> None:
    """SQLite: give each new connection the row check `sit_has_words` (`has_words`)."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", add_row_check)
