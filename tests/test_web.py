"""The web interface in-process: the session, CSRF, the throttles, and what each page does with
the API's own rules. `test_web_browser.py` drives the same pages in a real browser."""

import re
import time

import flask
import pytest
import sqlalchemy as sa
from helpers import (
    CSRF_FIELD,
    PASSWORD,
    app_context,
    bearer,
    comment_on,
    csrf_token,
    statements,
    wait_until,
    web_sign_in,
)

from sit import issues as api
from sit.auth import ADDRESS_LIMIT
from sit.config import ConfigError
from sit.extensions import db
from sit.models import Issue
from sit.web.base import OPEN_PAGES


@pytest.fixture
def signed_in(client, alice):
    assert web_sign_in(client, "alice").status_code == 302
    return client


def issue_count() -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count(Issue.id)))


def test_a_browser_at_root_gets_the_pages_and_every_api_client_the_api(client, alice):
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert (page.status_code, page.location) == (302, "/issues/")
    for headers in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        assert client.get("/", headers=headers).status_code == 401  # the API's answer
    api = client.get("/", headers={"Accept": "text/html"} | bearer(alice))
    assert api.status_code == 200 and api.json == []


def test_every_page_needs_a_session(app, client):
    """Every page's route, as registered: without a session, a `GET` goes to the sign-in page
    and a form is refused (without its CSRF token) or goes there too (with it)."""
    checked = 0
    token = csrf_token(client)  # a session of its own, signed in as nobody
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("web.") or rule.endpoint in OPEN_PAGES:
            continue
        path = re.sub(r"<[^>]+>", "1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if method == "POST":
                assert client.post(path).status_code == 400, path
            answer = client.open(path, method=method, data={"csrf_token": token})
            assert answer.status_code == 302, (method, path)
            assert answer.location.startswith("/sign-in?next="), (method, path)
            checked += 1
    assert checked >= 14


def test_a_page_sends_to_sign_in_and_back(client, alice, new_issue):
    issue = new_issue()
    page = client.get(f"/issues/{issue['id']}?x=1")
    assert page.status_code == 302
    assert page.location == f"/sign-in?next=/issues/{issue['id']}?x%3D1"
    form = {"username": "alice", "password": PASSWORD, "next": f"/issues/{issue['id']}?x=1"}
    signed = client.post("/sign-in", data=form | {"csrf_token": csrf_token(client)})
    assert signed.location == f"/issues/{issue['id']}?x=1"
    assert "Printer on fire" in client.get(signed.location).text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/\\evil.example"])
def test_sign_in_never_sends_to_another_site(client, alice, target):
    form = {"username": "alice", "password": PASSWORD, "next": target}
    assert client.post("/sign-in", data=form | {"csrf_token": csrf_token(client)}).location == (
        "/issues/"
    )


def test_wrong_password_on_the_form_is_a_401_page(client, alice):
    form = {"username": "alice", "password": "wrong", "csrf_token": csrf_token(client)}
    page = client.post("/sign-in", data=form)
    assert page.status_code == 401 and "Wrong username or password." in page.text
    assert client.get("/issues/").status_code == 302


def test_the_session_cookie_is_httponly_lax_and_secure_over_https(app, alice):
    plain = app.test_client()
    cookie = web_sign_in(plain, "alice").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = app.test_client()
    https = {"base_url": "https://sit.test", "headers": {"Referer": "https://sit.test/sign-in"}}
    flask.g.pop("csrf_token", None)  # as `csrf_token` does
    token = CSRF_FIELD.search(secure.get("/sign-in", **https).text).group(1)
    form = {"username": "alice", "password": PASSWORD, "csrf_token": token}
    signed = secure.post("/sign-in", data=form, **https)
    assert "; Secure" in signed.headers.get("Set-Cookie", ""), (signed.status_code, signed.text)


def test_a_session_never_authenticates_the_api(signed_in):
    assert signed_in.get("/issues/").status_code == 200
    for url in ("/api/", "/", "/api/users/me/"):
        assert signed_in.get(url, headers={"Accept": "application/json"}).status_code == 401


def test_a_new_password_ends_every_other_session_but_this_one(app, signed_in, alice):
    other = app.test_client()
    web_sign_in(other, "alice")
    form = {"current_password": PASSWORD, "new_password": "a new password"}
    changed = signed_in.post(
        "/settings/password", data=form | {"csrf_token": csrf_token(signed_in, "/settings")}
    )
    assert changed.status_code == 302
    assert signed_in.get("/settings").status_code == 200
    assert other.get("/settings").status_code == 302


def test_revoked_tokens_end_the_session(signed_in, alice):
    alice.revoke_tokens()
    db.session.commit()
    assert signed_in.get("/issues/").status_code == 302


def test_a_form_without_its_token_or_from_another_site_changes_nothing(signed_in):
    token = csrf_token(signed_in, "/issues/new")
    without = signed_in.post("/issues/new", data={"title": "Forged"})
    assert without.status_code == 400 and "CSRF" in without.text
    wrong = signed_in.post("/issues/new", data={"title": "Forged", "csrf_token": "x" + token})
    assert wrong.status_code == 400
    elsewhere = {"Origin": "https://evil.example"}
    foreign = signed_in.post(
        "/issues/new", data={"title": "Forged", "csrf_token": token}, headers=elsewhere
    )
    assert foreign.status_code == 403
    cross = {"Sec-Fetch-Site": "cross-site"}
    assert (
        signed_in.post(
            "/issues/new", data={"title": "Forged", "csrf_token": token}, headers=cross
        ).status_code
        == 403
    )
    assert issue_count() == 0
    made = signed_in.post("/issues/new", data={"title": "Real", "csrf_token": token})
    assert made.status_code == 302 and issue_count() == 1


def test_a_session_signs_its_csrf_token_once(app, signed_in, bob):
    """Every page of a session carries one token (`base.csrf_token`), where Flask-WTF would sign
    it anew with the second of each page; another session has its own."""
    first = csrf_token(signed_in, "/issues/new")
    second = int(time.time())
    wait_until(lambda: int(time.time()) > second, 2, "the next second")
    assert csrf_token(signed_in, "/settings") == first
    other = app.test_client()
    assert web_sign_in(other, "bob").status_code == 302
    theirs = csrf_token(other, "/settings")
    assert theirs != first
    refused = other.post("/issues/new", data={"title": "Forged", "csrf_token": first})
    made = signed_in.post("/issues/new", data={"title": "Real", "csrf_token": first})
    assert refused.status_code == 400 and made.status_code == 302 and issue_count() == 1


@pytest.fixture
def quick_hashing(monkeypatch):
    """Every password is wrong, at once: these tests count logins, not the hash's cost."""
    monkeypatch.setattr("sit.auth.check_password_hash", lambda hashed, password: False)


def spray(client, count, start=0, **environ):
    """Wrong passwords over 30 usernames, from the environ's address; the answers' statuses."""
    statuses = []
    for i in range(start, start + count):
        form = {"username": f"user{i % 30}", "password": "guess"}
        statuses.append(client.post("/get-token/", data=form, environ_base=environ).status_code)
    return statuses


def test_spraying_from_one_address_is_throttled_for_the_api_and_the_form(
    client, alice, quick_hashing
):
    statuses = spray(client, 60)
    assert statuses == [401] * ADDRESS_LIMIT + [429] * 10
    answer = client.post("/get-token/", data={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 0
    page = web_sign_in(client, "alice")
    assert page.status_code == 429 and "from your address" in page.text
    other = {"REMOTE_ADDR": "192.0.2.7"}
    assert spray(client, 1, **other) == [401]
    assert web_sign_in(client, "alice", **other).status_code == 302


def test_the_form_counts_as_a_login_for_the_address(client, alice, quick_hashing):
    for i in range(ADDRESS_LIMIT):
        form = {"username": f"user{i % 30}", "password": "x", "csrf_token": csrf_token(client)}
        assert client.post("/sign-in", data=form).status_code == 401
    assert spray(client, 1) == [429]


def test_behind_proxy_fix_each_client_address_is_counted_apart(instance, alice, quick_hashing):
    with app_context(SIT_PROXY_FIX="x_for=1") as app:
        client = app.test_client()
        first = {"HTTP_X_FORWARDED_FOR": "198.51.100.1"}
        assert spray(client, ADDRESS_LIMIT + 1, **first)[-1] == 429
        assert spray(client, 1, **{"HTTP_X_FORWARDED_FOR": "198.51.100.2"}) == [401]


def test_without_proxy_fix_a_forged_forwarded_for_changes_nothing(client, alice, quick_hashing):
    statuses = [
        spray(client, 1, i, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")[0]
        for i in range(ADDRESS_LIMIT + 1)
    ]
    assert statuses[-1] == 429


@pytest.mark.parametrize("value", ["x_for", "x_for=a", "x_forward=1", "x_for=-1"])
def test_a_bad_proxy_fix_stops_start_up_naming_it(instance, value):
    with pytest.raises(ConfigError, match="PROXY_FIX"), app_context(SIT_PROXY_FIX=value):
        pass


def test_markdown_is_rendered_and_sanitized(signed_in, new_issue):
    hostile = (
        "**bold** [x](javascript:alert(1)) <img src=x onerror=alert(1)> <script>alert(2)</script>"
    )
    issue = new_issue(title="<script>alert(1)</script>", description=hostile)
    page = signed_in.get(f"/issues/{issue['id']}").text
    assert "<strong>bold</strong>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for danger in ('href="javascript', "<script", "<img"):
        assert danger not in page.split('<main id="main">')[1], danger


def test_only_the_creator_edits(app, new_issue, bob, signed_in):
    issue = new_issue()
    assert signed_in.get(f"/issues/{issue['id']}/edit").status_code == 200
    other = app.test_client()
    web_sign_in(other, "bob")
    page = other.get(f"/issues/{issue['id']}")
    assert "/edit" not in page.text
    assert other.get(f"/issues/{issue['id']}/edit").status_code == 403


def edit_form(client, pk):
    page = client.get(f"/issues/{pk}/edit").text
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))


def test_a_stale_save_shows_what_changed_and_overwrites_nothing(
    client, signed_in, as_alice, new_issue, bob
):
    issue = new_issue(title="Old title")
    opened = edit_form(signed_in, issue["id"])
    client.patch(f"/api/{issue['id']}/", json={"title": "Their title"}, headers=as_alice)
    mine = opened | {
        "title": "My title",
        "description": "Smoke",
        "assigned_to": str(bob.id),
        "status": "O",
    }
    stale = signed_in.post(f"/issues/{issue['id']}/edit", data=mine)
    assert stale.status_code == 409, stale.text
    assert "was “Old title”, is now “Their title”" in stale.text
    assert db.session.get(Issue, issue["id"]).title == "Their title"
    again = mine | dict(
        re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', stale.text)
    )
    assert signed_in.post(f"/issues/{issue['id']}/edit", data=again).status_code == 302
    db.session.rollback()
    assert db.session.get(Issue, issue["id"]).title == "My title"


def test_a_change_landing_between_the_read_and_the_save_is_a_stale_save(
    signed_in, new_issue, bob, monkeypatch
):
    """The save's UPDATE checks the version the page read: a change committed in between (by
    another request) is shown as a stale save, never a 500, and is not overwritten."""
    issue = new_issue(title="Old title")
    opened = edit_form(signed_in, issue["id"])
    change = api.change

    def after_theirs(mine, fields):
        with db.engine.begin() as other:
            theirs = sa.update(Issue).where(Issue.id == mine.id)
            other.execute(theirs.values(title="Their title", version=Issue.version + 1))
        change(mine, fields)

    monkeypatch.setattr(api, "change", after_theirs)
    mine = opened | {"title": "My title", "description": "Smoke", "assigned_to": str(bob.id)}
    stale = signed_in.post(f"/issues/{issue['id']}/edit", data=mine | {"status": "O"})
    assert stale.status_code == 409, stale.text
    assert "was “Old title”, is now “Their title”" in stale.text
    db.session.rollback()
    assert db.session.get(Issue, issue["id"]).title == "Their title"


def test_a_new_issue_is_made_as_the_api_makes_it(signed_in, bob):
    form = {
        "title": " ",
        "assigned_to": str(bob.id),
        "csrf_token": csrf_token(signed_in, "/issues/new"),
    }
    refused = signed_in.post("/issues/new", data=form)
    assert refused.status_code == 400 and "title" in refused.text
    made = signed_in.post("/issues/new", data=form | {"title": "Kettle", "description": "Hot"})
    issue = db.session.scalar(sa.select(Issue))
    assert made.location == f"/issues/{issue.id}"
    assert (issue.title, issue.assigned_to_id, issue.created_by_id) == ("Kettle", bob.id, 1)


def test_the_list_filters_and_pages_with_the_apis_cursors(signed_in, new_issue, bob, alice):
    for i in range(3):
        new_issue(title=f"Bob's {i}")
    new_issue(title="Alice's", assigned_to=alice.id)
    mine = signed_in.get("/issues/?assigned_to=me&status=O").text
    assert "Alice&#39;s" in mine and "Bob&#39;s" not in mine
    first = signed_in.get("/issues/?assigned_to=2&per_page=2").text
    assert "Bob&#39;s 2" in first and "Bob&#39;s 0" not in first
    following = re.search(r'<a href="([^"]+)" rel="next">', first).group(1).replace("&amp;", "&")
    assert "cursor=" in following
    second = signed_in.get(following).text
    assert "Bob&#39;s 0" in second and "Bob&#39;s 2" not in second
    bad = signed_in.get("/issues/?per_page=1000")
    assert bad.status_code == 400 and "per_page" in bad.text


def test_the_list_names_each_assignee_with_its_row(signed_in, new_issue, alice, bob, carol):
    """Each row's assignee is read in the listing's own statement: as many statements for
    three assignees as for none (`bench/RESULTS.md`: the issues page beside the API's list)."""
    new_issue(title="Nobody's", assigned_to=None)
    assigned = re.compile(r'assigned to <a href="/issues/\?assigned_to=(\d+)">(\w+)</a>')

    def read(url="/issues/"):
        with statements() as seen:
            text = signed_in.get(url).text
        return len(seen), assigned.findall(text)

    few, rows = read()
    assert rows == []
    for name, user in (("Bob's", bob), ("Alice's", alice), ("Carol's", carol)):
        new_issue(title=name, assigned_to=user.id)
    more, rows = read()
    assert rows == [(str(user.id), user.username) for user in (carol, alice, bob)]
    assert more == few
    _, rows = read(f"/issues/?assigned_to={carol.id}")
    selected = signed_in.get(f"/issues/?assigned_to={carol.id}").text
    assert rows == [(str(carol.id), "carol")]
    assert f'<option value="{carol.id}" selected>carol</option>' in selected


def test_every_page_links_under_the_path_the_app_is_mounted_at(signed_in):
    """The header's links, built once for each mount point (`base.site_links`), follow the
    `SCRIPT_NAME` a proxy's prefix sets, request by request."""
    links = re.compile(r'<(?:link|script|a|form)[^>]* (?:href|src|action)="([^"#]+)"')
    for root in ("", "/sit", "/other", ""):
        text = signed_in.get("/settings", environ_overrides={"SCRIPT_NAME": root}).text
        found = links.findall(text.split("<main")[0])
        assert f"{root}/static/site.css" in found and f"{root}/issues/" in found
        assert f"{root}/sign-out" in found and all(link.startswith(f"{root}/") for link in found)


def test_settings_change_names_email_and_preferences(signed_in, alice):
    form = {"first_name": "Al", "last_name": "L", "email": "al@example.com", "notify_digest": "on"}
    saved = signed_in.post(
        "/settings", data=form | {"csrf_token": csrf_token(signed_in, "/settings")}
    )
    assert saved.status_code == 302
    db.session.refresh(alice)
    assert (alice.first_name, alice.email, alice.notify_digest, alice.notify_comments) == (
        "Al",
        "al@example.com",
        True,
        False,
    )
    bad = signed_in.post(
        "/settings", data=form | {"email": "nope", "csrf_token": csrf_token(signed_in, "/settings")}
    )
    assert bad.status_code == 400 and "not an email address" in bad.text


def test_admins_create_users_and_see_the_made_up_password(app, signed_in, alice, bob):
    alice.is_admin = True
    db.session.commit()
    token = csrf_token(signed_in, "/admin/users")
    made = signed_in.post(
        "/admin/users", data={"username": "dora", "email": "dora@example.com", "csrf_token": token}
    )
    assert made.status_code == 201
    password = re.search(r'<code id="new-password">([^<]+)</code>', made.text).group(1)
    dora = app.test_client()
    assert web_sign_in(dora, "dora", password).status_code == 302
    assert dora.get("/admin/users").status_code == 403
    taken = signed_in.post(
        "/admin/users", data={"username": "dora", "email": "d@example.com", "csrf_token": token}
    )
    assert taken.status_code == 409
    last = signed_in.post(f"/admin/users/{alice.id}", data={"active": "on", "csrf_token": token})
    assert last.status_code == 409 and "last active admin" in last.text


def test_the_conversation_interleaves_comments_with_history(
    app, signed_in, client, as_alice, new_issue, bob
):
    issue = new_issue(title="Old")
    page = f"/issues/{issue['id']}"
    token = csrf_token(signed_in, page)
    said = signed_in.post(f"{page}/comments", data={"body": "First *look*", "csrf_token": token})
    assert said.status_code == 302 and said.location.startswith(f"{page}#comment-")
    client.patch(f"/api/{issue['id']}/", json={"title": "New", "status": "C"}, headers=as_alice)
    text = signed_in.get(page).text
    order = [
        "opened this issue",
        "<em>look</em>",
        "changed the title from “Old” to “New”",
        "closed this",
    ]
    assert [text.index(part) for part in order] == sorted(text.index(part) for part in order)
    blank = signed_in.post(f"{page}/comments", data={"body": "  ", "csrf_token": token})
    assert blank.status_code == 400 and "may not be blank" in blank.text


def test_an_issue_page_reads_as_much_however_long_its_conversation(
    signed_in, client, as_alice, as_root, new_issue, alice, bob
):
    """Its labels and the reader's watching are read with the issue, its conversation in one
    statement, whatever their length: nothing is read per comment, event or label
    (`bench/RESULTS.md`: an issue's page beside the API's GET)."""
    for name in ("bug", "ui", "docs"):
        client.post("/api/labels/", json={"name": name}, headers=as_root)
    issue = new_issue(labels=["bug"])
    page = f"/issues/{issue['id']}"

    def discuss(start, stop, labels):
        for n in range(start, stop):
            comment_on(issue["id"], bob, f"Comment {n}")
            change = {"title": f"Title {n}", "assigned_to": [alice.id, bob.id][n % 2]}
            client.patch(issue["url"], json=change | {"labels": labels}, headers=as_alice)

    def read():
        with statements() as seen:
            text = signed_in.get(page).text
        shown = ('<li class="comment"', '<li class="event', '<span class="label">')
        return len(seen), *(text.count(html) for html in shown)

    discuss(0, 1, ["bug"])
    short = read()
    discuss(1, 4, ["bug", "ui", "docs"])
    long = read()
    # opened; renamed and assigned each time; the labels added, as events and on the issue
    assert (short[1:], long[1:]) == ((1, 3, 1), (4, 11, 3))
    # the session's user; the issue with its labels and your watching; the conversation; the
    # users its history names
    assert short[0] == long[0] == 4


def test_only_its_author_edits_a_comment(app, signed_in, new_issue, bob):
    issue = new_issue()
    page = f"/issues/{issue['id']}"
    signed_in.post(
        f"{page}/comments", data={"body": "Mine", "csrf_token": csrf_token(signed_in, page)}
    )
    cid = int(re.search(r'id="comment-(\d+)"', signed_in.get(page).text).group(1))
    edit = f"{page}/comments/{cid}/edit"
    assert edit in signed_in.get(page).text and "(edited)" not in signed_in.get(page).text
    saved = signed_in.post(
        edit, data={"body": "Mine, edited", "csrf_token": csrf_token(signed_in, edit)}
    )
    shown = signed_in.get(page).text
    assert saved.status_code == 302 and "Mine, edited" in shown and "(edited)" in shown
    other = app.test_client()
    web_sign_in(other, "bob")
    assert edit not in other.get(page).text
    assert other.get(edit).status_code == 403


def test_the_close_button_closes_unless_the_issue_changed(signed_in, client, as_alice, new_issue):
    issue = new_issue()
    page = f"/issues/{issue['id']}"
    shown = dict(
        re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', signed_in.get(page).text)
    )
    client.patch(f"/api/{issue['id']}/", json={"description": "changed"}, headers=as_alice)
    signed_in.post(f"{page}/status", data=shown)
    assert db.session.get(Issue, issue["id"]).status == "O"
    shown = dict(
        re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', signed_in.get(page).text)
    )
    signed_in.post(f"{page}/status", data=shown)
    db.session.rollback()
    assert db.session.get(Issue, issue["id"]).status == "C"


def test_admins_manage_labels_and_issues_carry_them(signed_in, alice, new_issue):
    alice.is_admin = True
    db.session.commit()
    token = csrf_token(signed_in, "/admin/labels")
    made = signed_in.post(
        "/admin/labels", data={"name": "bug", "color": "#d73a4a", "csrf_token": token}
    )
    assert made.status_code == 302
    again = signed_in.post(
        "/admin/labels", data={"name": "BUG", "color": "#d73a4a", "csrf_token": token}
    )
    assert again.status_code == 409
    form = {"title": "Labelled", "labels": "bug", "csrf_token": token}
    signed_in.post("/issues/new", data=form)
    new_issue(title="Bare")
    listed = signed_in.get("/issues/?label=bug").text
    assert "Labelled" in listed and "Bare" not in listed
    assert "Bare" in signed_in.get("/issues/?label=none").text
    pk = re.search(r'action="/admin/labels/(\d+)"', signed_in.get("/admin/labels").text).group(1)
    signed_in.post(f"/admin/labels/{pk}", data={"delete": "1", "csrf_token": token})
    assert "bug" not in signed_in.get("/issues/").text


def test_watch_and_ignore_from_the_page(app, new_issue, bob):
    issue = new_issue(assigned_to=None)
    page = f"/issues/{issue['id']}"
    client = app.test_client()
    web_sign_in(client, "bob")
    assert "You get no comment emails about this issue." in client.get(page).text
    token = csrf_token(client, page)
    client.post(f"{page}/subscription", data={"watch": "yes", "csrf_token": token})
    assert "(you watch it)" in client.get(page).text
    client.post(f"{page}/subscription", data={"watch": "no", "csrf_token": token})
    assert "about this issue: you ignore it." in client.get(page).text
