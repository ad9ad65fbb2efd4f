"""Paging: cursors in Link next/prev walk a listing whole, either way; X-Total-Count's rules."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from helpers import POSTGRES, ids, link_map
from itsdangerous import URLSafeSerializer

from sit import pagination, search
from sit.demo import text
from sit.extensions import db
from sit.models import Issue, Label, issue_labels
from sit.pagination import count_up_to
from sit.search import count_and_list

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def tied(client, as_alice):
    """Eleven issues whose created_at and updated_at repeat (ties only the id breaks)."""
    made = [client.post("/api/", json={"title": f"t{n}"}, headers=as_alice).json for n in range(11)]
    for n, issue in enumerate(made):
        at = {"created_at": T0 + timedelta(seconds=n // 3), "updated_at": T0 - timedelta(n % 2)}
        db.session.execute(sa.update(Issue).where(Issue.id == issue["id"]).values(**at))
    db.session.commit()
    return [issue["id"] for issue in made]


def walk(client, headers, path, rel):
    """The ids of every page from `path` on, following `rel` links until there is none."""
    seen, pages = [], 0
    while path:
        response = client.get(path, headers=headers)
        seen.append(ids(response))
        path = link_map(response).get(rel)
        pages += 1
        assert pages < 50
    return seen


def flat(pages):
    return [item for page in pages for item in page]


@pytest.mark.parametrize("sort", ["id", "created", "updated"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_cursors_walk_the_whole_listing_both_ways(client, as_alice, tied, sort, direction):
    listing = f"/api/?sort={sort}&direction={direction}"
    whole = ids(client.get(listing, headers=as_alice))
    assert sorted(whole) == sorted(tied)
    forward = walk(client, as_alice, f"{listing}&per_page=3", "next")
    assert [len(page) for page in forward] == [3, 3, 3, 2]
    assert flat(forward) == whole
    last = client.get(f"{listing}&per_page=3&page=4", headers=as_alice)
    backward = walk(client, as_alice, link_map(last)["prev"], "prev")
    assert flat(backward[::-1]) == whole[:9]
    assert "prev" not in link_map(client.get(f"{listing}&per_page=3", headers=as_alice))


def test_every_next_link_is_a_cursor_and_page_numbers_still_work(client, as_alice, tied):
    response = client.get("/api/?sort=id&per_page=4&page=2", headers=as_alice)
    assert ids(response) == tied[::-1][4:8]
    links = link_map(response)
    assert "cursor=" in links["next"] and "&page=" not in links["next"]
    assert "cursor=" in links["prev"]
    assert links["first"].endswith("page=1") and links["last"].endswith("page=3")
    assert ids(client.get(links["next"], headers=as_alice)) == tied[::-1][8:]
    assert ids(client.get(links["prev"], headers=as_alice)) == tied[::-1][:4]


def cursor_of(client, headers):
    link = link_map(client.get("/api/?sort=updated&per_page=2", headers=headers))["next"]
    return link.split("cursor=")[1]


AT = "2026-01-01T00:00:00+00:00"


def signed(app, payload, key=None):
    return URLSafeSerializer(key or app.config["SECRET_KEY"], salt="sit.cursor").dumps(payload)


@pytest.mark.parametrize(
    "make",
    [
        lambda app, good: "garbage",
        lambda app, good: good[:-3],  # signature cut short
        lambda app, good: good.replace(".", "x.", 1),  # payload changed under the signature
        lambda app, good: signed(app, ["updated.desc", "n", AT, 5], key="another installation"),
        lambda app, good: signed(app, ["created.desc", "n", AT, 5]),  # another order's
        lambda app, good: signed(app, ["updated.asc", "n", AT, 5]),
        lambda app, good: signed(app, ["updated.desc", "x", AT, 5]),
        lambda app, good: signed(app, ["updated.desc", "n", AT]),
        lambda app, good: signed(app, ["updated.desc", "n", AT, 5, 6]),
        lambda app, good: signed(app, ["updated.desc", "n", "yesterday", 5]),
        lambda app, good: signed(app, ["updated.desc", "n", 5, AT]),
        lambda app, good: signed(app, ["updated.desc", "n", AT, "five"]),
        lambda app, good: signed(app, ["updated.desc", "n", AT, {"a": 1}]),
        lambda app, good: signed(app, {"updated.desc": 1}),
        lambda app, good: signed(app, "updated.desc"),
        lambda app, good: "x" * 301,
    ],
)
def test_a_forged_or_foreign_cursor_is_400_naming_it(app, client, as_alice, tied, make):
    good = cursor_of(client, as_alice)
    assert client.get(f"/api/?sort=updated&cursor={good}", headers=as_alice).status_code == 200
    response = client.get(f"/api/?sort=updated&cursor={make(app, good)}", headers=as_alice)
    assert response.status_code == 400
    assert list(response.json["errors"]) == ["cursor"]


def test_a_cursor_with_a_page_is_400(client, as_alice, tied):
    good = cursor_of(client, as_alice)
    response = client.get(f"/api/?sort=updated&page=2&cursor={good}", headers=as_alice)
    assert response.status_code == 400
    assert "cursor" in response.json["errors"]


def test_total_is_exact_up_to_the_cap_then_left_out_with_last(client, as_alice, tied, monkeypatch):
    monkeypatch.setattr(pagination, "COUNT_CAP", 10)
    monkeypatch.setattr(pagination, "FAR_MORE", 100)  # PostgreSQL guesses for tables not analyzed
    response = client.get("/api/?per_page=3", headers=as_alice)
    assert "X-Total-Count" not in response.headers
    assert set(link_map(response)) == {"first", "next"}
    assert client.get("/api/?per_page=20", headers=as_alice).headers["X-Total-Count"] == "11"
    filtered = client.get("/api/?per_page=3&q=t1", headers=as_alice)  # t1 and t10
    assert filtered.headers["X-Total-Count"] == "2"
    second = link_map(client.get("/api/?per_page=3&status=O", headers=as_alice))["next"]
    assert "X-Total-Count" not in client.get(second, headers=as_alice).headers
    monkeypatch.setattr(pagination, "COUNT_CAP", 11)
    response = client.get("/api/?per_page=3", headers=as_alice)
    assert response.headers["X-Total-Count"] == "11"
    assert link_map(response)["last"].endswith("page=4")


def test_users_page_by_cursor_too(client, as_alice, alice, bob, carol):
    pages = walk(client, as_alice, "/api/users/?per_page=2", "next")
    assert flat(pages) == sorted([alice.id, bob.id, carol.id])


@pytest.fixture
def printers(app, alice, monkeypatch):
    """`make(n, m, l)`: n issues, the first m of them about a printer, the rest about a
    scanner, the first l labelled `bug`; with X-Total-Count capped at 10 and SQLite's sample
    scaled down to 8 windows of 10 ids (and its filters found in the index, as when they leave
    many issues); PostgreSQL's statistics are then brought up to date, as `seed-demo` and
    autovacuum do."""
    monkeypatch.setattr(pagination, "COUNT_CAP", 10)
    monkeypatch.setattr(search, "COUNT_CAP", 10)
    monkeypatch.setattr(search, "ROW_TESTS", 0)
    monkeypatch.setattr(search, "SAMPLES", 8)
    monkeypatch.setattr(search, "SAMPLE_WIDTH", 10)

    def make(issues, matching, labelled=0):
        rows = [
            {"title": "Printer" if n < matching else "Scanner", "description": text(3, 8),
             "status": "O", "created_by_id": alice.id, "issue_id": f"{n:012x}", "version": 1}
            for n in range(issues)
        ]  # fmt: skip
        made = db.session.scalars(sa.insert(Issue.__table__).returning(Issue.id), rows).all()
        bug = Label(name="bug", folded="bug")
        db.session.add(bug)
        db.session.flush()
        if labelled:
            carrying = [{"issue_id": pk, "label_id": bug.id} for pk in made[:labelled]]
            db.session.execute(sa.insert(issue_labels), carrying)
        db.session.commit()
        if POSTGRES:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("ANALYZE")

    return make


@pytest.fixture
def counts(monkeypatch):
    """How far each count went: the caps of the counts the listing ran."""
    caps = []

    def spy(select, cap):
        caps.append(cap)
        return count_up_to(select, cap)

    def listing_spy(query, cap):
        caps.append(cap)
        return count_and_list(query, cap)

    monkeypatch.setattr(pagination, "count_up_to", spy)
    monkeypatch.setattr(search, "count_up_to", spy)
    monkeypatch.setattr(search, "count_and_list", listing_spy)  # SQLite: counts as it lists
    return caps


@pytest.mark.parametrize("query", [{"q": "printer"}, {"q": "printer", "status": "O"}])
def test_far_more_matches_than_the_cap_are_not_counted(client, as_alice, printers, counts, query):
    """PostgreSQL's planner, or SQLite's sample of the index, says "far more than 10,000": no
    count, no X-Total-Count, no `last`; the page is the search's, exact."""
    printers(400, 200)
    response = client.get("/api/", query_string={"per_page": 5, **query}, headers=as_alice)
    assert "X-Total-Count" not in response.headers
    assert set(link_map(response)) == {"first", "next"}
    assert [issue["title"] for issue in response.json] == ["Printer"] * 5
    assert 11 not in counts  # nothing counted to the cap + 1


@pytest.mark.parametrize("query", [{"q": "printer"}, {"q": "printer", "status": "O"}])
@pytest.mark.parametrize("matching", [3, 10, 40])
def test_an_estimate_of_few_matches_is_counted(client, as_alice, printers, query, matching):
    """Where the estimate is under the margin (FAR_MORE times the cap; SQLite: 5 deviations
    under its sample), the count is exact up to the cap, and above it left out by counting."""
    printers(400, matching)
    response = client.get("/api/", query_string={"per_page": 2, **query}, headers=as_alice)
    total = response.headers.get("X-Total-Count")
    assert total == (str(matching) if matching <= 10 else None)
    assert ("last" in link_map(response)) == (matching <= 10)


@pytest.mark.parametrize(("labelled", "expected"), [(800, None), (8, "8")])
def test_a_search_with_a_label_is_estimated_then_counted(
    client, as_alice, printers, counts, labelled, expected
):
    """The estimate takes the label in (SQLite: its sample of the index has the labels, as it
    has the filters); under the margin, the count is exact."""
    printers(800, 400, labelled)
    query = {"q": "printer", "label": "bug", "per_page": 2}
    response = client.get("/api/", query_string=query, headers=as_alice)
    assert response.headers.get("X-Total-Count") == expected
    assert len(response.json) == 2
    assert (11 in counts) == (expected is not None)


@pytest.mark.parametrize(
    ("q", "matching", "expected", "counted"),
    [("printer", 12, None, (1, 1)), ("print", 12, None, (2, 2)), ("printer", 6, "6", (1, 2))],
)
def test_a_search_counts_the_words_themselves_first(
    client, as_alice, printers, counts, monkeypatch, q, matching, expected, counted
):
    """Counted in the index: first the issues with the words themselves, which it reads
    without gathering every issue of every word a start begins; their starts only when the
    words alone are not past the cap already. SQLite asks for a start that begins no other word
    as the word (`printer`: counted once)."""
    monkeypatch.setattr(search, "few_matches", lambda *_: False)  # PostgreSQL: not fenced,
    monkeypatch.setattr(pagination, "FAR_MORE", 10**6)  # nor spared by the planner's estimate
    printers(20, matching)
    query = {"q": q, "per_page": 2}
    response = client.get("/api/", query_string=query, headers=as_alice)
    assert response.headers.get("X-Total-Count") == expected
    assert counts == [11] * counted[bool(POSTGRES)]


@pytest.mark.parametrize(("planned", "expected"), [(5 * 10 - 1, "3"), (5 * 10, None)])
def test_the_planners_estimate_stands_in_only_at_the_margin(
    client, as_alice, new_issue, monkeypatch, planned, expected
):
    """Any listing: an estimate just under FAR_MORE times the cap is counted, exactly."""
    monkeypatch.setattr(pagination, "COUNT_CAP", 10)
    monkeypatch.setattr(pagination, "planned_rows", lambda select: planned)
    for _ in range(3):
        new_issue()
    response = client.get("/api/?per_page=1&status=O", headers=as_alice)
    assert response.headers.get("X-Total-Count") == expected


@pytest.mark.parametrize(
    ("labelled", "planned", "expected", "sampled"),
    [(200, 300, None, True), (8, 300, "8", True), (200, 12, None, False)],
)
def test_where_postgresql_expects_more_but_not_far_more_a_sample_may_stand_in(
    postgres_db, client, as_alice, printers, counts, monkeypatch, labelled, planned, expected,
    sampled,
):  # fmt: skip
    """PostgreSQL: where its planner expects more than the cap, but not FAR_MORE times more,
    the issues' words in a few windows of ids, each row tested, stand in for counting when they
    say more too (the first 200 of 400 issues match); where they do not (the first 8: the
    estimate was wrong), the count is exact; where the estimate is too near the cap for a
    sample to tell, none is taken."""
    monkeypatch.setattr(search, "few_matches", lambda *_: False)  # not fenced, and
    monkeypatch.setattr(pagination, "FAR_MORE", 10**6)  # never spared by the estimate alone
    monkeypatch.setattr(pagination, "planned_rows", lambda select: planned)
    monkeypatch.setattr(search, "WORDS_SAMPLE_WIDTH", 25)  # 8 windows of 25 of the 400 ids
    printers(400, 400, labelled)
    samples = []

    def seen(connection, cursor, statement, parameters, context, executemany):
        samples.extend(["sample"] if "ts_match_vq" in statement else [])

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    query = {"q": "printer", "label": "bug", "per_page": 2}
    response = client.get("/api/", query_string=query, headers=as_alice)
    assert response.headers.get("X-Total-Count") == expected
    assert len(response.json) == 2
    assert bool(samples) == sampled
    assert (11 in counts) == (not sampled or expected is not None)


def test_the_planners_estimate_is_compiled_as_its_listing_is(postgres_db, app, client, as_alice):
    """PostgreSQL: a listing's plan (`EXPLAIN`) goes through SQLAlchemy's statement cache,
    compiled once for each shape of listing, whatever its values (compiling it anew for each
    request took a quarter of a page)."""
    for status in "OOCC":
        client.post("/api/", json={"title": "t", "status": status}, headers=as_alice)
    plans = []

    def seen(connection, cursor, statement, parameters, context, executemany):
        if statement.startswith("EXPLAIN"):
            plans.append(context.cache_hit)

    sa.event.listen(db.engine, "before_cursor_execute", seen)
    for status in "OC":  # one per page: each is counted, and planned first
        response = client.get(f"/api/?per_page=1&status={status}", headers=as_alice)
        assert response.headers["X-Total-Count"] == "2"
    dialect = db.engine.dialect
    assert plans == [dialect.CACHE_MISS, dialect.CACHE_HIT]
