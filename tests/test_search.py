"""Search (`q=`): words or their starts, case-insensitive, all of them, in title or description;
what a user types is never a query language; the index follows every change."""

import hashlib
import os

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade
from helpers import POSTGRES, ROOT

from sit import create_app, search
from sit.extensions import db
from sit.models import Issue

PAGE_PLAN = search.page_plan  # before the fixture below replaces it


@pytest.mark.parametrize(
    ("matches", "expected"),
    [(0, "sorted"), (500, "sorted"), (2_400, "probed"), (10_000, "probed"), (50_000, "tested")],
)
def test_the_cheapest_plan_at_a_million_issues(matches, expected):
    """Sorting few matches, probing a list of some, testing rows when they are many."""
    assert PAGE_PLAN(matches, 1_000_000) == expected


@pytest.mark.parametrize(
    ("sampled", "issues"), [(64_000, 1_000_000), (8_000, 1_000_000), (64_000, 128_000), (80, 400)]
)
def test_a_sample_stops_at_the_fewest_matches_that_say_more(sampled, issues):
    """A sample of the index counts no further than it needs: one match fewer would not say
    that more than COUNT_CAP issues match."""
    fewest = search.enough(sampled, issues)
    assert search.says_more(fewest, sampled, issues)
    assert not search.says_more(fewest - 1, sampled, issues)


@pytest.fixture(params=["sorted", "probed", "tested"], autouse=True)
def plan(request, monkeypatch):
    """The ways to a page of search results, which must all find the same issues: every match
    sorted, or the sort's index walked with each row looked up in a list of the matches (SQLite)
    or tested (on SQLite by `has_words`). On SQLite a filter always goes to the index (as when it
    leaves more than `ROW_TESTS` issues)."""
    monkeypatch.setattr(search, "page_plan", lambda *_: request.param)
    monkeypatch.setattr(search, "few_matches", lambda *_: request.param == "sorted")
    monkeypatch.setattr(search, "ROW_TESTS", 0)
    return request.param


@pytest.fixture(params=["indexed", "tested"])
def filtered(request, monkeypatch):
    """SQLite: a filter's issues found in the index by their facets, or each of them tested."""
    if request.param == "tested":
        monkeypatch.setattr(search, "ROW_TESTS", 1_000)


@pytest.fixture
def titles(client, as_alice):
    """Issues by title; each test looks them up by what it searches."""
    made = {}
    for title, description in [
        ("Crash on save", "The editor crashes when saving a large file"),
        ("Login page broken", "Nothing happens after SUBMIT"),
        ("Slow export", "CSV takes 100% CPU; see crash.log"),
        ('He said "NEAR(a b)" OR -x', "100%_done * 'quoted' \\ back"),
        ("Résumé upload", "Ünïcödé 問題"),
    ]:
        body = {"title": title, "description": description}
        made[title] = client.post("/api/", json=body, headers=as_alice).json["id"]
    return made


def counted(client, as_alice, **query):
    """X-Total-Count of a search's first page of one issue: counted past the page, where the
    search counts (its index), whenever more than one issue matches."""
    response = client.get("/api/", query_string={"per_page": 1, **query}, headers=as_alice)
    assert len(response.json) == min(int(response.headers["X-Total-Count"]), 1)
    return response.headers["X-Total-Count"]


def found(client, as_alice, q):
    response = client.get("/api/", query_string={"q": q, "sort": "id"}, headers=as_alice)
    assert response.status_code == 200, response.json
    return sorted(issue["title"] for issue in response.json)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("crash", ["Crash on save", "Slow export"]),  # crash.log is the words crash and log
        ("CRASH", ["Crash on save", "Slow export"]),
        ("cra", ["Crash on save", "Slow export"]),  # the start of a word
        ("cr", ["Crash on save", "Slow export"]),  # one and two letters: FTS5's prefix index
        ("c", ["Crash on save", "Slow export"]),
        ("crashes", ["Crash on save"]),  # only in a description
        ("rash", []),  # inside a word is not the start of one
        ("crash save", ["Crash on save"]),  # every word must be there
        ("crash login", []),
        ("submit", ["Login page broken"]),
        ("100", ['He said "NEAR(a b)" OR -x', "Slow export"]),
        ("résumé", ["Résumé upload"]),
        ("RÉSU", ["Résumé upload"]),
        ("resume", []),  # diacritics count, on both databases
        ("問題", ["Résumé upload"]),
        ("üNÏ", ["Résumé upload"]),
    ],
)
def test_words_or_their_starts_case_insensitive_all_of_them(client, as_alice, titles, q, expected):
    assert found(client, as_alice, q) == expected


QUOTED = ['He said "NEAR(a b)" OR -x']


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('"', []),
        ("*", []),
        ("%", []),
        ("_", []),
        ("%_", []),
        ("'", []),
        ("\\", []),
        (":*", []),
        ("&|!()<->", []),
        ("-x", QUOTED),  # the word x, not "without x"
        ("-crash", ["Crash on save", "Slow export"]),
        ("crash OR login", []),  # OR is a word to find, not an operator
        ("NEAR(a b)", QUOTED),
        ("NEAR(crash save)", []),
        ('"crash', ["Crash on save", "Slow export"]),
        ('cra"sh', []),  # the words cra and sh
        ("crash*", ["Crash on save", "Slow export"]),
        ("title:crash", []),  # not a column filter: the word title
        ("^crash", ["Crash on save", "Slow export"]),
        ("crash:*", ["Crash on save", "Slow export"]),
        ("'crash' & !save", ["Crash on save"]),  # the words crash and save
        ("AND", []),
        ("NOT crash", []),
        ("100%_done", QUOTED),
        ("quoted' \\ back", QUOTED),
    ],
)
def test_what_a_user_types_is_taken_literally(client, as_alice, titles, q, expected):
    assert found(client, as_alice, q) == expected


@pytest.mark.parametrize("begun", [8, 1])
def test_a_start_finds_every_word_it_begins(client, as_alice, new_issue, monkeypatch, begun):
    """SQLite asks for a start as the words of its index that it begins, or, where they are
    more than BEGUN (1 here), as a prefix query: either way, found and counted, every issue
    with any of them, and none with a word it is inside of."""
    monkeypatch.setattr(search, "BEGUN", begun)
    for title in ["Printer jam", "Printing slow", "Print queue", "Blueprint lost", "Sprint"]:
        new_issue(title=title, description="")
    assert found(client, as_alice, "print") == ["Print queue", "Printer jam", "Printing slow"]
    assert counted(client, as_alice, q="print") == "3"


def test_the_index_follows_creates_changes_and_deletes(client, as_alice, new_issue):
    issue = new_issue(title="Printer on fire", description="smoke")
    assert found(client, as_alice, "printer smoke") == ["Printer on fire"]
    client.patch(f"/api/{issue['id']}/", json={"title": "Scanner jammed"}, headers=as_alice)
    assert found(client, as_alice, "printer") == []
    assert found(client, as_alice, "scanner smoke") == ["Scanner jammed"]
    client.patch(f"/api/{issue['id']}/", json={"status": "C"}, headers=as_alice)
    assert found(client, as_alice, "scanner") == ["Scanner jammed"]
    client.put(f"/api/{issue['id']}/", json={"title": "Fax"}, headers=as_alice)
    assert found(client, as_alice, "smoke") == []
    assert found(client, as_alice, "fax") == ["Fax"]
    client.delete(f"/api/{issue['id']}/", headers=as_alice)
    assert found(client, as_alice, "fax") == []


def test_counts_follow_creates_changes_and_deletes(client, as_alice, new_issue):
    """Counted past a first page, from the search's own index where nothing else filters
    (SQLite's FTS5; PostgreSQL's copy of the words when matches are many)."""

    def count(q):
        return counted(client, as_alice, q=q)

    first, second, *_ = [new_issue(title="Printer on fire", description="") for _ in range(4)]
    assert count("printer fire") == "4"
    client.patch(f"/api/{first['id']}/", json={"title": "Scanner on fire"}, headers=as_alice)
    assert count("printer fire") == "3"
    client.patch(f"/api/{first['id']}/", json={"description": "printer"}, headers=as_alice)
    assert count("printer fire") == "4"
    client.patch(f"/api/{first['id']}/", json={"status": "C"}, headers=as_alice)
    assert count("printer fire") == "4"
    client.delete(f"/api/{second['id']}/", headers=as_alice)
    assert count("printer fire") == "3"


def test_filtered_counts_follow_status_and_assignee_changes(
    client, as_alice, as_root, new_issue, bob, filtered
):
    """The search index knows each issue's status, assignee and creator (SQLite's since
    migration 0007, PostgreSQL's since 0012), and keeps them when its labels change."""

    def count(**filters):
        return counted(client, as_alice, q="printer", **filters)

    first, second, *_ = [new_issue() for _ in range(4)]  # by alice, assigned to bob, open
    assert count(status="O") == count(assigned_to=bob.id) == count(created_by="alice") == "4"
    assert count(status="C") == count(assigned_to="none") == count(created_by="bob") == "0"
    for issue in (first, second):
        client.patch(f"/api/{issue['id']}/", json={"status": "closed"}, headers=as_alice)
    assert count(status="C") == count(status="O") == "2"
    client.patch(f"/api/{first['id']}/", json={"assigned_to": None}, headers=as_alice)
    assert count(assigned_to="none") == "1"
    assert count(assigned_to=bob.id) == "3"
    assert count(assigned_to=bob.id, status="C", created_by="me") == "1"
    assert count(created_by="nobody") == "0"
    client.post("/api/labels/", json={"name": "bug"}, headers=as_root)
    client.patch(f"/api/{second['id']}/", json={"labels": ["bug"]}, headers=as_alice)
    assert count(status="C") == "2"


def test_text_cannot_pass_for_a_filter(client, as_alice, new_issue, filtered):
    """Titles with the index's own words for `status=C` in them (SQLite's facets) stay open."""
    forged = f"Forged {search.facet('status', 'C')}"
    for title, status in [(forged, "O"), (forged, "O"), ("Forged", "C"), ("Forged", "C")]:
        new_issue(title=title, status=status)
    query = {"q": "forged", "status": "C", "per_page": 1}
    response = client.get("/api/", query_string=query, headers=as_alice)
    assert response.headers["X-Total-Count"] == "2"
    assert response.json[0]["status"] == "C"


def test_a_description_of_a_megabyte_of_distinct_words_is_stored_and_found(client, as_alice):
    """More than a PostgreSQL tsvector holds (1 MiB) if it were indexed whole."""
    description = " ".join(hashlib.md5(str(n).encode()).hexdigest() for n in range(30_000))
    body = {"title": "Huge", "description": description}
    assert client.post("/api/", json=body, headers=as_alice).status_code == 201
    assert found(client, as_alice, description[:32]) == ["Huge"]


def test_search_combines_with_filters_and_counts(client, as_alice, as_bob, titles, filtered):
    client.post("/api/", json={"title": "Crash by bob"}, headers=as_bob)
    response = client.get("/api/?q=crash&created_by=bob", headers=as_alice)
    assert [issue["title"] for issue in response.json] == ["Crash by bob"]
    assert response.headers["X-Total-Count"] == "1"
    response = client.get("/api/?q=crash&per_page=1", headers=as_alice)
    assert response.headers["X-Total-Count"] == "3"
    client.post("/api/", json={"title": "Crash again by bob"}, headers=as_bob)
    response = client.get("/api/?q=crash&created_by=bob&per_page=1", headers=as_alice)
    assert response.headers["X-Total-Count"] == "2"  # counted past the first page, filtered


def test_the_migration_indexes_issues_that_exist(tmp_path, monkeypatch, request, plan):
    """A database with issues, made at revision 0002, finds and counts them by search, and by
    search with a filter, once upgraded."""
    if POSTGRES:
        postgres = request.getfixturevalue("postgres")
        uri = postgres.create(f"sit_search_{os.getpid()}")
        request.addfinalizer(lambda: postgres.drop(f"sit_search_{os.getpid()}"))
    else:
        uri = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(tmp_path))
    app = create_app({"SQLALCHEMY_DATABASE_URI": uri, "SECRET_KEY": "x"})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="0002")
        with db.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO users (id, username, email, first_name, last_name, "
                    "password_hash, token_generation) VALUES (1, 'old', 'o@x', '', '', 'x', 0)"
                )
            )
            connection.execute(
                sa.text(
                    "INSERT INTO issues (issue_id, title, description, status, created_by_id, "
                    "created_at, updated_at, version) VALUES "
                    "('a1', 'Old crash', 'kept', 'O', 1, :at, :at, 1), "
                    "('a2', 'Old login', '', 'C', 1, :at, :at, 1)"
                ),
                {"at": "2026-01-01 00:00:00"},
            )
        upgrade(directory=str(ROOT / "migrations"))
        found = search.find(db.session.connection(), "old cra", {})
        assert db.session.scalars(sa.select(Issue.title).where(found.where)).all() == ["Old crash"]
        assert found.count is None or found.count() == 1
        closed = search.find(db.session.connection(), "old", {"status": "C"})
        listed = sa.select(Issue.title).where(closed.where, Issue.status == "C")
        assert db.session.scalars(listed).all() == ["Old login"]
        assert closed.count is None or closed.count() == 1
        db.session.remove()
        db.engine.dispose()
