"""Labels: admins manage them, everyone reads them; an issue carries a set of them by name."""

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade
from helpers import POSTGRES, ROOT, app_at, ids, link_map, statements

from sit import labels, search
from sit.extensions import db
from sit.models import Issue, Label, User, issue_labels


@pytest.fixture
def label(client, as_root):
    """Create a label as an admin; its JSON."""

    def create(name, **fields):
        response = client.post("/api/labels/", json={"name": name, **fields}, headers=as_root)
        assert response.status_code == 201, response.json
        return response.json

    return create


def test_an_admin_creates_a_label(client, as_root, as_alice):
    body = {"name": "Bug", "color": "#D73A4A", "description": "Something is broken"}
    response = client.post("/api/labels/", json=body, headers=as_root)
    assert response.status_code == 201
    made = response.json
    assert made == body | {
        "id": made["id"],
        "color": "#d73a4a",
        "url": response.headers["Location"],
    }
    assert made["url"] == f"http://sit.test/api/labels/{made['id']}/"
    assert client.get(made["url"], headers=as_alice).json == made


def test_defaults_and_a_form(client, as_root):
    response = client.post("/api/labels/", data={"name": "ui"}, headers=as_root)
    assert (response.json["color"], response.json["description"]) == ("#ededed", "")


def test_everyone_lists_labels_by_name_paged(client, as_alice, label):
    for name in ("printer", "Bug", "ui"):
        label(name)
    listed = client.get("/api/labels/?per_page=2", headers=as_alice)
    assert [item["name"] for item in listed.json] == ["Bug", "printer"]
    assert listed.headers["X-Total-Count"] == "3"
    rest = client.get(link_map(listed)["next"], headers=as_alice)
    assert [item["name"] for item in rest.json] == ["ui"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/labels/", {"name": "mine"}),
        ("PATCH", "/api/labels/{pk}/", {"name": "mine"}),
        ("DELETE", "/api/labels/{pk}/", None),
    ],
)
def test_only_admins_manage_labels(client, as_alice, label, method, path, body):
    made = label("bug")
    response = client.open(path.format(pk=made["id"]), method=method, json=body, headers=as_alice)
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert [item["name"] for item in client.get("/api/labels/", headers=as_alice).json] == ["bug"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 51}, "name"),
        ({"name": "None"}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"name": "bug", "color": "red"}, "color"),
        ({"name": "bug", "color": "#12345"}, "color"),
        ({"name": "bug", "description": "x" * 256}, "description"),
        ({"name": "bug", "colour": "#ffffff"}, "colour"),
    ],
)
def test_bad_labels_are_400_naming_the_field(client, as_root, body, field):
    response = client.post("/api/labels/", json=body, headers=as_root)
    assert response.status_code == 400
    assert field in response.json["errors"]
    assert client.get("/api/labels/", headers=as_root).json == []


def test_50_characters_fit(label):
    assert label("é" * 50)["name"] == "é" * 50


def test_names_are_unique_ignoring_case(client, as_root, label):
    bug, ui = label("Bug"), label("ui")
    for name in ("bug", "BUG", " bUg "):
        response = client.post("/api/labels/", json={"name": name}, headers=as_root)
        assert response.status_code == 409, name
        assert response.mimetype == "application/problem+json"
    assert client.patch(ui["url"], json={"name": "BUG"}, headers=as_root).status_code == 409
    assert client.get(ui["url"], headers=as_root).json["name"] == "ui"
    renamed = client.patch(bug["url"], json={"name": "BUG"}, headers=as_root)
    assert renamed.status_code == 200 and renamed.json["name"] == "BUG"


def test_unique_ignoring_case_beyond_ascii(client, as_root, label):
    label("Straße")
    assert client.post("/api/labels/", json={"name": "STRASSE"}, headers=as_root).status_code == 409


def test_an_admin_changes_a_label_and_issues_show_its_new_name(
    client, as_root, as_alice, label, new_issue
):
    made = label("bug")
    issue = new_issue(labels=["bug"])
    changed = client.patch(
        made["url"], json={"name": "defect", "color": "#00FF00"}, headers=as_root
    )
    assert changed.json == made | {"name": "defect", "color": "#00ff00"}
    assert client.get(issue["url"], headers=as_alice).json["labels"] == ["defect"]


def test_deleting_a_label_takes_it_off_every_issue(client, as_root, as_alice, label, new_issue):
    bug = label("bug")
    label("ui")
    issue = new_issue(labels=["bug", "ui"])
    assert client.delete(bug["url"], headers=as_root).status_code == 204
    assert client.get(bug["url"], headers=as_root).status_code == 404
    assert client.get(issue["url"], headers=as_alice).json["labels"] == ["ui"]


def test_an_issue_is_created_with_labels_by_name_ignoring_case(client, as_alice, label, new_issue):
    for name in ("urgent", "Bug"):
        label(name)
    issue = new_issue(labels=["URGENT", "bug", "Bug"])
    assert issue["labels"] == ["Bug", "urgent"]
    assert client.get(issue["url"], headers=as_alice).json["labels"] == ["Bug", "urgent"]


def test_a_form_names_labels_by_repeating_the_field(client, as_alice, label):
    for name in ("bug", "ui"):
        label(name)
    form = {"title": "From a form", "labels": ["bug", "ui"]}
    created = client.post("/api/", data=form, headers=as_alice)
    assert created.status_code == 201 and created.json["labels"] == ["bug", "ui"]
    cleared = client.patch(created.json["url"], data={"labels": ""}, headers=as_alice)
    assert cleared.json["labels"] == []


def test_put_and_patch_replace_the_set(client, as_alice, label, new_issue):
    for name in ("bug", "ui", "urgent"):
        label(name)
    issue = new_issue(labels=["bug", "ui"])
    patched = client.patch(issue["url"], json={"labels": ["urgent", "ui"]}, headers=as_alice)
    assert patched.json["labels"] == ["ui", "urgent"]
    kept = client.patch(issue["url"], json={"title": "Other"}, headers=as_alice)
    assert kept.json["labels"] == ["ui", "urgent"]
    replaced = client.put(issue["url"], json={"title": "Put"}, headers=as_alice)
    assert replaced.json["labels"] == []


def test_a_new_set_moves_the_issues_etag(client, as_alice, label, new_issue):
    label("bug")
    issue = new_issue()
    etag = client.get(issue["url"], headers=as_alice).headers["ETag"]
    labeled = client.patch(issue["url"], json={"labels": ["bug"]}, headers=as_alice)
    assert labeled.headers["ETag"] != etag
    stale = as_alice | {"If-Match": etag}
    assert client.patch(issue["url"], json={"labels": []}, headers=stale).status_code == 412


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["bug", "nope", "Nada"], "no label is named Nada, nope"),
        ("bug", "valid list"),
        ([""], "at least 1 character"),
        (None, "may not be null"),
    ],
)
def test_unknown_or_bad_labels_are_400_naming_them_and_change_nothing(
    client, as_alice, label, new_issue, labels, message
):
    label("bug")
    issue = new_issue()
    response = client.patch(issue["url"], json={"labels": labels}, headers=as_alice)
    assert response.status_code == 400
    assert any(message in text for text in response.json["errors"]["labels"]), response.json
    assert client.get(issue["url"], headers=as_alice).json["labels"] == []
    created = client.post("/api/", json={"title": "t", "labels": ["nope"]}, headers=as_alice)
    assert created.status_code == 400 and "nope" in created.json["detail"]


def test_only_whoever_may_edit_the_issue_labels_it(client, as_bob, as_alice, label, new_issue):
    label("bug")
    issue = new_issue()
    assert client.patch(issue["url"], json={"labels": ["bug"]}, headers=as_bob).status_code == 403
    assert client.get(issue["url"], headers=as_alice).json["labels"] == []


def test_a_listing_reads_its_pages_labels_in_one_query(client, as_alice, label, new_issue):
    for name in ("bug", "ui"):
        label(name)

    def queries(per_page):
        with statements() as seen:
            response = client.get(f"/api/?per_page={per_page}", headers=as_alice)
        assert all(item["labels"] == ["bug", "ui"] for item in response.json)
        return len(seen)

    for _ in range(6):
        new_issue(labels=["bug", "ui"])
    assert queries(per_page=1) == queries(per_page=5)  # each counts the issues too


@pytest.fixture(params=["sorted", "probed", "tested"])
def plan(request, monkeypatch):
    """SQLite's ways to a page of a label's issues, found in its search index with the
    other filters and the words (`search.page_plan` chooses by their count), which must all
    find the same: the matches read and sorted, looked up walking the sort's index, or each
    row's labels (and words) tested."""
    monkeypatch.setattr(search, "page_plan", lambda *_: request.param)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("label=bug", [0, 1, 2]),
        ("label=BUG&label=ui", [1]),
        ("label=bug&label=ui&label=urgent", []),
        ("label=urgent", []),
        ("label=none", [3]),
        ("label=none&label=bug", []),
        ("label=nope", []),
        ("label=bug&status=C", [2]),
        ("label=bug&q=printer", [0, 1]),
        ("label=bug&q=printer&status=C", []),
        ("label=bug&q=screen&status=C", [2]),
        ("label=none&q=printer", [3]),
        ("label=bug&assigned_to=none&created_by=me", [0, 2]),
        ("label=bug&sort=updated&direction=desc", [2, 0, 1]),
        ("label=bug&sort=id&direction=desc", [2, 1, 0]),
        ("label=bug&sort=created&direction=asc", [0, 1, 2]),
    ],
)
def test_the_listing_filters_by_labels(client, as_alice, bob, label, plan, query, expected):
    for name in ("bug", "ui", "urgent"):
        label(name)
    made = [
        client.post("/api/", json=body, headers=as_alice).json["id"]
        for body in (
            {"title": "Printer on fire", "labels": ["bug"], "status": "C"},
            {"title": "Printer jammed", "labels": ["bug", "ui"], "assigned_to": bob.id},
            {"title": "Screen flickers", "labels": ["bug"], "status": "C"},
            {"title": "Printer is slow"},
        )
    ]
    client.patch(f"/api/{made[0]}/", json={"status": "O"}, headers=as_alice)  # updated last
    client.patch(f"/api/{made[2]}/", json={"description": "Updated last"}, headers=as_alice)
    default_order = "" if "sort=" in query else "&sort=id&direction=asc"
    response = client.get(f"/api/?{query}{default_order}", headers=as_alice)
    assert ids(response) == [made[n] for n in expected]
    assert response.headers["X-Total-Count"] == str(len(expected))
    first = client.get(f"/api/?{query}{default_order}&per_page=1", headers=as_alice)
    assert first.headers["X-Total-Count"] == str(len(expected))  # counted past the page


def test_a_search_with_labels_counts_the_labelled_matches_only(client, as_alice, label):
    label("bug")
    for body in ({"labels": ["bug"]}, {"labels": ["bug"]}, {}, {}):
        client.post("/api/", json={"title": "Printer broken", **body}, headers=as_alice)
    response = client.get("/api/?q=printer&label=bug&per_page=1", headers=as_alice)
    assert len(response.json) == 1 and response.headers["X-Total-Count"] == "2"
    assert link_map(response)["last"].endswith("page=2")


def test_a_bad_label_filter_is_400(client, as_alice):
    response = client.get("/api/?label=" + "x" * 51, headers=as_alice)
    assert response.status_code == 400 and "label" in response.json["errors"]


def labelled_ids(facets):
    """The ids of the issues that carry every one of these labels' words in the search index:
    SQLite's `issues_fts`, PostgreSQL's `issues_words` (migration 0011)."""
    if POSTGRES:
        return search.words_matching(search.lexemes(facets))
    return search.matching_ids([], facets)


def index_is_exact():
    """The search index's words for labels (migration 0011: SQLite's `issues_fts`,
    PostgreSQL's `issues_words`) name exactly the issues that carry each label (none for a
    deleted one), or carry none, and no deleted issue."""
    issues = set(db.session.scalars(sa.select(Issue.id)))
    carried = db.session.execute(sa.select(issue_labels.c.label_id, issue_labels.c.issue_id))
    by_label = {pk: set() for pk in range(1, 10)}
    for label_id, issue_id in carried:
        by_label[label_id].add(issue_id)
    by_label[None] = issues - set().union(*by_label.values())
    for value, expected in by_label.items():
        indexed = labelled_ids([search.facet("label", value)])
        assert set(db.session.scalars(indexed)) == expected
    if not POSTGRES:  # `issues_words` goes with its issue by a foreign key
        statuses = [search.matching_ids([], [search.facet("status", s)]) for s in ("O", "C")]
        assert set(db.session.scalars(sa.union(*statuses))) == issues


@pytest.fixture
def labelled_counts(client, as_alice, monkeypatch):
    """X-Total-Count of a first page of one issue for each label filter, alone and with a
    search, counted (on SQLite by its search index, each filter found in it as when it leaves
    many issues) wherever more than one issue is listed; and the index checked whole."""
    monkeypatch.setattr(search, "ROW_TESTS", 0)
    queries = ["label=bug", "label=bug&label=ui", "label=none", "label=ui&q=printer",
               "label=bug&q=printer", "label=none&q=printer", "label=bug&status=O"]  # fmt: skip

    def counts():
        found = {}
        for query in queries:
            response = client.get(f"/api/?{query}&per_page=1", headers=as_alice)
            found[query] = int(response.headers["X-Total-Count"])
            assert len(response.json) == min(found[query], 1)
        index_is_exact()
        return found

    return counts


def test_label_filters_follow_every_change_of_labels(
    client, as_root, as_alice, label, new_issue, labelled_counts
):
    """Labels added, taken off, replaced, renamed and deleted, and an issue deleted: each
    filter, with a search or not, counts what the issues carry."""
    bug, _ = label("bug"), label("ui")
    first, second, third, _ = [
        new_issue(labels=labels) for labels in ([], ["bug"], ["bug", "ui"], [])
    ]
    assert labelled_counts() == {
        "label=bug": 2, "label=bug&label=ui": 1, "label=none": 2, "label=ui&q=printer": 1,
        "label=bug&q=printer": 2, "label=none&q=printer": 2, "label=bug&status=O": 2,
    }  # fmt: skip
    client.patch(first["url"], json={"labels": ["ui", "bug"]}, headers=as_alice)  # added
    client.patch(third["url"], json={"labels": ["ui"]}, headers=as_alice)  # one taken off
    client.patch(second["url"], json={"labels": [], "status": "C"}, headers=as_alice)
    assert labelled_counts() == {
        "label=bug": 1, "label=bug&label=ui": 1, "label=none": 2, "label=ui&q=printer": 2,
        "label=bug&q=printer": 1, "label=none&q=printer": 2, "label=bug&status=O": 1,
    }  # fmt: skip
    client.patch(bug["url"], json={"name": "defect"}, headers=as_root)
    replaced = {"title": "Printer jammed", "labels": ["defect"]}  # and open again
    client.put(second["url"], json=replaced, headers=as_alice)
    client.patch(bug["url"], json={"name": "bug"}, headers=as_root)
    assert labelled_counts() == {
        "label=bug": 2, "label=bug&label=ui": 1, "label=none": 1, "label=ui&q=printer": 2,
        "label=bug&q=printer": 2, "label=none&q=printer": 1, "label=bug&status=O": 2,
    }  # fmt: skip
    client.delete(first["url"], headers=as_alice)  # an issue with labels
    assert labelled_counts() == {
        "label=bug": 1, "label=bug&label=ui": 0, "label=none": 1, "label=ui&q=printer": 1,
        "label=bug&q=printer": 1, "label=none&q=printer": 1, "label=bug&status=O": 1,
    }  # fmt: skip
    assert client.delete(bug["url"], headers=as_root).status_code == 204  # off `second`
    label("bug")  # a new label of the same name finds none of the old one's issues
    assert labelled_counts() == {
        "label=bug": 0, "label=bug&label=ui": 0, "label=none": 2, "label=ui&q=printer": 1,
        "label=bug&q=printer": 0, "label=none&q=printer": 2, "label=bug&status=O": 0,
    }  # fmt: skip


def test_an_issue_deleted_by_the_databases_cascade_leaves_the_filters(
    client, as_alice, label, new_issue, labelled_counts
):
    """A DELETE of the issue alone (SIT's delete takes the labels off first, through the ORM):
    its labelling goes by the foreign key's cascade, and it is no label's issue any more."""
    label("bug"), label("ui")
    issues = [new_issue(labels=labels)["id"] for labels in (["bug", "ui"], ["bug"], [])]
    db.session.execute(sa.delete(Issue).where(Issue.id == issues[0]))
    db.session.commit()
    assert labelled_counts() == {
        "label=bug": 1, "label=bug&label=ui": 0, "label=none": 1, "label=ui&q=printer": 0,
        "label=bug&q=printer": 1, "label=none&q=printer": 1, "label=bug&status=O": 1,
    }  # fmt: skip


def test_the_migration_indexes_the_labels_issues_carry(tmp_path, request):
    """A database with labelled issues, made at revision 0010, upgraded: its search index
    knows their labels, and a search finds them by label; down to 0010 and up again, the
    same."""
    with app_at("0010", tmp_path, request):
        user = {"username": "old", "email": "o@x", "first_name": "", "last_name": "",
                "password_hash": "x", "token_generation": 0}  # fmt: skip
        user_id = db.session.execute(sa.insert(User).values(user).returning(User.id)).scalar()
        issues = [
            {"issue_id": f"a{n}", "title": title, "description": "", "status": "O",
             "created_by_id": user_id, "version": 1}
            for n, title in enumerate(["Old crash", "Old crash too", "Old login"])
        ]  # fmt: skip
        made = db.session.scalars(sa.insert(Issue).returning(Issue.id), issues).all()
        bug = db.session.scalar(sa.insert(Label).values(name="bug", folded="bug", color="#ededed",
                                description="").returning(Label.id))  # fmt: skip
        rows = [{"issue_id": pk, "label_id": bug} for pk in made[1:]]
        db.session.execute(sa.insert(issue_labels), rows)
        db.session.commit()
        for again in (False, True):
            if again:  # 0007's index (or 0006's words) back, then this one's
                db.session.rollback()  # PostgreSQL: the reads' locks would hold the DDL up
                downgrade(directory=str(ROOT / "migrations"), revision="0010")
            upgrade(directory=str(ROOT / "migrations"))
            index_is_exact()
            for names, expected in ((["bug"], ["Old crash too"]), (["none"], ["Old crash"])):
                found = search.find(db.session.connection(), "crash", {}, labels.having(names))
                titles = db.session.scalars(sa.select(Issue.title).where(found.where)).all()
                assert titles == expected
