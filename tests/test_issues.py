"""The issue API: create, read, replace, update, delete, list; conditional requests."""

import pytest
import sqlalchemy as sa
from helpers import ids, link_map

from sit.extensions import db
from sit.models import Issue


def count_issues():
    return db.session.scalar(sa.select(sa.func.count(Issue.id)))


def snapshot():
    return [
        (i.id, i.title, i.description, i.status, i.assigned_to_id, i.version)
        for i in db.session.scalars(sa.select(Issue).execution_options(populate_existing=True))
    ]


def test_create_answers_201_with_the_issue_and_its_location(client, as_alice, bob):
    response = client.post(
        "/api/",
        json={"title": "Printer on fire", "description": "Smoke", "assigned_to": bob.id},
        headers=as_alice,
    )
    assert response.status_code == 201
    issue = response.json
    assert list(issue) == [
        "id",
        "issue_id",
        "title",
        "description",
        "assigned_to",
        "created_by",
        "status",
        "labels",
        "comments",
        "created_at",
        "updated_at",
        "url",
    ]
    assert (issue["labels"], issue["comments"]) == ([], 0)
    assert issue["created_by"] == "alice"
    assert issue["assigned_to"] == bob.id
    assert issue["status"] == "O"
    assert len(issue["issue_id"]) == 12 and int(issue["issue_id"], 16) >= 0
    assert issue["created_at"].endswith("Z")
    assert issue["url"] == f"http://sit.test/api/{issue['id']}/"
    assert response.headers["Location"] == issue["url"]
    assert response.headers["ETag"]


def test_create_at_root_and_form_encoded_as_the_original_did(client, as_alice, bob):
    response = client.post(
        "/",
        data={"title": "Form", "description": "d", "assigned_to": str(bob.id)},
        headers=as_alice,
    )
    assert response.status_code == 201
    assert response.json["assigned_to"] == bob.id
    unassigned = client.post("/", data={"title": "Form", "assigned_to": ""}, headers=as_alice)
    assert unassigned.json["assigned_to"] is None


@pytest.mark.parametrize(
    ("given", "stored"), [("O", "O"), ("C", "C"), ("open", "O"), ("CLOSED", "C"), ("Closed", "C")]
)
def test_status_accepts_letters_and_words(client, as_alice, given, stored):
    response = client.post("/api/", json={"title": "t", "status": given}, headers=as_alice)
    assert response.json["status"] == stored


def test_read_only_fields_sent_back_are_ignored(client, as_alice, new_issue):
    issue = new_issue()
    sent_back = issue | {
        "title": "Renamed",
        "id": 999,
        "issue_id": "000000000000",
        "created_by": "mallory",
        "created_at": "2000-01-01T00:00:00Z",
    }
    response = client.put(f"/api/{issue['id']}/", json=sent_back, headers=as_alice)
    assert response.status_code == 200
    assert response.json["title"] == "Renamed"
    assert {k: response.json[k] for k in ("id", "issue_id", "created_by", "created_at")} == {
        k: issue[k] for k in ("id", "issue_id", "created_by", "created_at")
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "t", "priority": "high"}, "priority"),
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"title": 5}, "title"),
        ({"title": "t", "description": ["a"]}, "description"),
        ({"title": "t", "assigned_to": "bob"}, "assigned_to"),
        ({"title": "t", "assigned_to": True}, "assigned_to"),
        ({"title": "t", "assigned_to": 1.5}, "assigned_to"),
        ({"title": "t", "assigned_to": 999}, "assigned_to"),
        ({"title": "t", "assigned_to": 2**64}, "assigned_to"),
        ({"title": "t", "status": "maybe"}, "status"),
        ({"title": "nul\x00"}, "title"),
        ({"title": "t", "description": "nul\x00"}, "description"),
        (["title"], "body"),
        ("title", "body"),
    ],
)
def test_bad_bodies_are_400_naming_the_field_and_change_nothing(
    client, as_alice, new_issue, body, field
):
    issue = new_issue()
    before = snapshot()
    for method, path in (("post", "/api/"), ("put", f"/api/{issue['id']}/")):
        response = getattr(client, method)(path, json=body, headers=as_alice)
        assert response.status_code == 400, (method, response.json)
        assert response.mimetype == "application/problem+json"
        assert field in response.json["errors"]
        assert field in response.json["detail"]
    assert snapshot() == before


def test_title_is_stripped_and_255_characters_fit(client, as_alice):
    response = client.post("/api/", json={"title": "  " + "x" * 255 + " "}, headers=as_alice)
    assert response.status_code == 201
    assert response.json["title"] == "x" * 255


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("{not json", "application/json", 400),
        ('{"title": "t"', "application/json", 400),
        ("", "application/json", 400),
        ("title=t", "text/plain", 415),
        ('{"title": "t"}', "application/xml", 415),
        ('{"title": "' + "x" * (1024 * 1024) + '"}', "application/json", 413),
    ],
    ids=["malformed", "truncated", "empty", "text", "xml", "over-1-MiB"],
)
def test_unreadable_bodies_are_4xx_problems_and_change_nothing(
    client, as_alice, new_issue, data, content_type, status
):
    issue = new_issue()
    before = snapshot()
    for method, path in (("post", "/api/"), ("patch", f"/api/{issue['id']}/")):
        response = getattr(client, method)(
            path, data=data, content_type=content_type, headers=as_alice
        )
        assert response.status_code == status
        assert response.mimetype == "application/problem+json"
        assert response.json["status"] == status and response.json["detail"]
        assert "Traceback" not in response.get_data(as_text=True)
    assert snapshot() == before


@pytest.mark.parametrize("path", ["/api/{id}/", "/api/{id}"])
def test_get_one_with_or_without_slash(client, as_bob, new_issue, path):
    issue = new_issue()
    response = client.get(path.format(id=issue["id"]), headers=as_bob)
    assert response.status_code == 200
    assert response.json == issue


@pytest.mark.parametrize(
    "pk", ["999", "0", "99999999999999999999999", "abc", "-1", "9223372036854775808"]
)
def test_missing_or_out_of_range_ids_are_404(client, as_alice, pk):
    for method in ("get", "put", "patch", "delete"):
        response = getattr(client, method)(f"/api/{pk}/", json={"title": "t"}, headers=as_alice)
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"


def test_head_and_options(client, as_alice, new_issue):
    issue = new_issue()
    head = client.head(f"/api/{issue['id']}/", headers=as_alice)
    assert head.status_code == 200 and head.data == b"" and head.headers["ETag"]
    assert client.head("/api/", headers=as_alice).status_code == 200
    allow = client.options(f"/api/{issue['id']}/").headers["Allow"]
    assert set(allow.split(", ")) == {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}
    assert set(client.options("/api/").headers["Allow"].split(", ")) == {
        "GET",
        "HEAD",
        "POST",
        "OPTIONS",
    }


def test_unsupported_method_is_405_with_allow(client, as_alice):
    response = client.post("/api/1/", json={}, headers=as_alice)
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert "PATCH" in response.headers["Allow"]


def test_put_replaces_every_writable_field(client, as_alice, new_issue):
    issue = new_issue(status="C")
    response = client.put(f"/api/{issue['id']}/", json={"title": "Only a title"}, headers=as_alice)
    assert response.status_code == 200
    assert (
        response.json["title"],
        response.json["description"],
        response.json["assigned_to"],
        response.json["status"],
    ) == ("Only a title", "", None, "O")


def test_patch_changes_only_the_given_fields(client, as_alice, new_issue, bob):
    issue = new_issue()
    response = client.patch(f"/api/{issue['id']}/", json={"status": "closed"}, headers=as_alice)
    assert response.status_code == 200
    assert response.json == issue | {"status": "C", "updated_at": response.json["updated_at"]}
    unassigned = client.patch(f"/api/{issue['id']}/", data={"assigned_to": ""}, headers=as_alice)
    assert unassigned.json["assigned_to"] is None


@pytest.mark.parametrize("field", ["title", "description", "status"])
def test_patch_refuses_null_for_required_fields(client, as_alice, new_issue, field):
    issue = new_issue()
    response = client.patch(f"/api/{issue['id']}/", json={field: None}, headers=as_alice)
    assert response.status_code == 400
    assert field in response.json["errors"]


@pytest.mark.parametrize(
    ("method", "body"),
    [("put", {"title": "Mine now"}), ("patch", {"status": "C"}), ("delete", None)],
)
def test_only_the_creator_may_change_or_delete(client, as_bob, new_issue, method, body):
    issue = new_issue()
    before = snapshot()
    response = getattr(client, method)(f"/api/{issue['id']}/", json=body, headers=as_bob)
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert "alice" in response.json["detail"]
    assert snapshot() == before


def test_delete_answers_204_then_the_issue_is_gone(client, as_alice, new_issue):
    issue = new_issue()
    response = client.delete(f"/api/{issue['id']}/", headers=as_alice)
    assert response.status_code == 204 and response.data == b""
    assert client.get(f"/api/{issue['id']}/", headers=as_alice).status_code == 404
    assert count_issues() == 0


def test_deleted_ids_are_never_reused(client, as_alice, new_issue):
    first = new_issue()
    client.delete(f"/api/{first['id']}/", headers=as_alice)
    assert new_issue()["id"] == first["id"] + 1


def test_etag_changes_with_the_issue_and_if_none_match_gives_304(client, as_alice, new_issue):
    issue = new_issue()
    path = f"/api/{issue['id']}/"
    etag = client.get(path, headers=as_alice).headers["ETag"]
    cached = client.get(path, headers=as_alice | {"If-None-Match": etag})
    assert cached.status_code == 304 and cached.data == b"" and cached.headers["ETag"] == etag
    changed = client.patch(path, json={"title": "New"}, headers=as_alice)
    assert changed.headers["ETag"] != etag
    fresh = client.get(path, headers=as_alice | {"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json["title"] == "New"


@pytest.mark.parametrize(
    ("method", "body"), [("put", {"title": "Mine"}), ("patch", {"title": "Mine"}), ("delete", None)]
)
def test_stale_if_match_is_412_and_changes_nothing(client, as_alice, new_issue, method, body):
    issue = new_issue()
    path = f"/api/{issue['id']}/"
    stale = client.get(path, headers=as_alice).headers["ETag"]
    client.patch(path, json={"description": "someone else's edit"}, headers=as_alice)
    before = snapshot()
    response = getattr(client, method)(path, json=body, headers=as_alice | {"If-Match": stale})
    assert response.status_code == 412
    assert response.mimetype == "application/problem+json"
    assert snapshot() == before


def test_current_if_match_lets_the_change_through(client, as_alice, new_issue):
    issue = new_issue()
    path = f"/api/{issue['id']}/"
    etag = client.get(path, headers=as_alice).headers["ETag"]
    assert (
        client.patch(
            path, json={"title": "Mine"}, headers=as_alice | {"If-Match": etag}
        ).status_code
        == 200
    )
    assert client.delete(path, headers=as_alice | {"If-Match": "*"}).status_code == 204


def test_a_write_racing_another_is_refused_not_lost(app, client, as_alice, new_issue):
    """The version check in the UPDATE itself catches a change made after our read."""
    issue = new_issue()
    with sa.orm.Session(db.engine) as mine:
        read = mine.get(Issue, issue["id"])
        theirs = client.patch(f"/api/{issue['id']}/", json={"title": "Theirs"}, headers=as_alice)
        assert theirs.status_code == 200
        read.title = "Mine"
        with pytest.raises(sa.orm.exc.StaleDataError):
            mine.commit()
    assert client.get(f"/api/{issue['id']}/", headers=as_alice).json["title"] == "Theirs"


@pytest.fixture
def listing(client, as_alice, as_bob, alice, bob):
    """Four issues: three by alice, one by bob, with distinct words, states and assignees."""
    made = [
        client.post(
            "/api/", json={"title": "Login page broken", "assigned_to": bob.id}, headers=as_alice
        ),
        client.post(
            "/api/",
            json={
                "title": "Export slow",
                "description": "CSV export takes 100% CPU",
                "status": "C",
                "assigned_to": alice.id,
            },
            headers=as_alice,
        ),
        client.post("/api/", json={"title": "Typo on login_form"}, headers=as_alice),
        client.post(
            "/api/", json={"title": "Crash on save", "assigned_to": bob.id}, headers=as_bob
        ),
    ]
    return [response.json["id"] for response in made]


@pytest.mark.parametrize("path", ["/", "/api/", "/api"])
def test_list_is_newest_first_by_default(client, as_alice, listing, path):
    assert ids(client.get(path, headers=as_alice)) == listing[::-1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=O", [0, 2, 3]),
        ("status=closed", [1]),
        ("assigned_to=me", [1]),
        ("assigned_to=none", [2]),
        ("assigned_to={bob}", [0, 3]),
        ("assigned_to=999", []),
        ("created_by=bob", [3]),
        ("created_by=me", [0, 1, 2]),
        ("created_by=nobody", []),
        ("q=login", [0, 2]),
        ("q=LOGIN+page", [0]),
        ("q=cpu", [1]),
        ("q=100%25", [1]),
        ("q=%25", []),
        ("q=_", []),
        ("q=login_form", [2]),
        ("q=' OR 1=1 --", []),
        ("status=O&assigned_to={bob}&created_by=alice", [0]),
    ],
)
def test_list_filters_and_search(client, as_alice, listing, bob, query, expected):
    response = client.get(
        f"/api/?sort=id&direction=asc&{query.format(bob=bob.id)}", headers=as_alice
    )
    assert ids(response) == [listing[n] for n in expected]
    assert response.headers["X-Total-Count"] == str(len(expected))


def test_list_sorts(client, as_alice, listing):
    client.patch(f"/api/{listing[0]}/", json={"title": "Touched last"}, headers=as_alice)
    assert ids(client.get("/api/?sort=id&direction=asc", headers=as_alice)) == listing
    assert ids(client.get("/api/?sort=created&direction=asc", headers=as_alice)) == listing
    assert ids(client.get("/api/?sort=updated", headers=as_alice))[0] == listing[0]


def test_text_comes_back_as_utf_8_from_one_issue_and_a_listing(client, as_alice, new_issue):
    issue = new_issue(title="Ünïcödé ✓ 問題")
    for path in (f"/api/{issue['id']}/", "/api/"):
        response = client.get(path, headers=as_alice)
        assert response.mimetype == "application/json"
        assert "Ünïcödé ✓ 問題".encode() in response.data
        assert response.data.endswith(b"}\n") or response.data.endswith(b"]\n")


def test_list_pages_with_link_and_total(client, as_alice, listing):
    response = client.get("/api/?per_page=1&page=2&status=O", headers=as_alice)
    assert ids(response) == [listing[2]]
    assert response.headers["X-Total-Count"] == "3"
    links = link_map(response)
    assert set(links) == {"first", "prev", "next", "last"}
    assert links["first"] == "/api/?per_page=1&status=O&page=1"
    assert links["last"] == "/api/?per_page=1&status=O&page=3"
    assert ids(client.get(links["next"], headers=as_alice)) == [listing[0]]
    assert ids(client.get(links["prev"], headers=as_alice)) == [listing[3]]
    last = client.get(links["last"], headers=as_alice)
    assert "next" not in link_map(last) and ids(last) == [listing[0]]
    beyond = client.get("/api/?page=9", headers=as_alice)
    assert beyond.json == [] and link_map(beyond)["prev"] == "/api/?page=1"


def test_default_page_holds_30(client, as_alice):
    for n in range(31):
        client.post("/api/", json={"title": f"Issue {n}"}, headers=as_alice)
    response = client.get("/api/", headers=as_alice)
    assert len(response.json) == 30
    assert response.headers["X-Total-Count"] == "31"


@pytest.mark.parametrize(
    "query",
    [
        "status=X",
        "assigned_to=someone",
        "assigned_to=0",
        "assigned_to=99999999999999999999",
        "sort=title",
        "direction=up",
        "page=0",
        "page=x",
        "per_page=0",
        "per_page=101",
        "q=" + "x" * 151,
        "q=nul%00",
        "created_by=nul%00",
        "colour=red",
    ],
)
def test_bad_list_parameters_are_400_naming_them(client, as_alice, query):
    response = client.get(f"/api/?{query}", headers=as_alice)
    assert response.status_code == 400
    assert query.split("=")[0] in response.json["errors"]


INJECTIONS = ["'; DROP TABLE issues; --", "alice' OR '1'='1", '" OR ""="', "1; DELETE FROM users"]


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("parameter", ["q", "created_by", "assigned_to", "status", "sort"])
def test_sql_in_search_and_filters_is_only_ever_a_value(
    client, as_alice, listing, parameter, injection
):
    before = snapshot()
    response = client.get("/api/", query_string={parameter: injection}, headers=as_alice)
    if parameter in ("assigned_to", "status", "sort"):  # typed: refused as a value
        assert response.status_code == 400
        assert parameter in response.json["errors"]
    else:  # free text: matched literally, and nothing matches
        assert ids(response) == []
    assert snapshot() == before


def test_a_title_full_of_sql_is_found_literally(client, as_alice, listing):
    made = client.post("/api/", json={"title": INJECTIONS[0]}, headers=as_alice).json
    response = client.get("/api/", query_string={"q": INJECTIONS[0]}, headers=as_alice)
    assert ids(response) == [made["id"]]
    assert count_issues() == len(listing) + 1


def test_links_use_public_url_never_the_host_header(client, as_alice, listing):
    evil = as_alice | {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    created = client.post("/api/", json={"title": "t"}, headers=evil)
    assert created.headers["Location"] == f"http://sit.test/api/{created.json['id']}/"
    assert created.json["url"] == created.headers["Location"]
    listed = client.get("/api/?per_page=1", headers=evil)
    assert all(issue["url"].startswith("http://sit.test/") for issue in listed.json)
    assert "evil" not in listed.headers["Link"]
    assert listed.headers["Link"].count("<http://sit.test/api/?") == 3  # first, next, last
