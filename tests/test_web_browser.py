"""The web interface in Debian's chromium against real gunicorn with an SMTP sink: two people
working on one issue, with JavaScript on and off; hostile text; a form from elsewhere; axe-core
and a 360 px screen on every page. The JS-on walkthrough saves the README's screenshots."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from axe_playwright_python.sync_playwright import Axe
from helpers import PASSWORD, ROOT, Server, SmtpSink, gunicorn, wait_until
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from sit.extensions import db
from sit.models import Issue

TIMEOUT_MS = 10_000
SCREENSHOTS = ROOT / "docs" / "screenshots"
LINK = re.compile(r"http://127\.0\.0\.1:\d+/issues/\d+")


@pytest.fixture
def server(instance: Path, smtp: SmtpSink, root, alice) -> Iterator[Server]:
    """SIT with two workers, its emails to the sink a second after they are due; an admin
    (root) and Ana (alice) have accounts."""
    with gunicorn(instance, 2, SIT_ASSIGNMENT_EMAIL_DELAY="1s", **smtp.env) as running:
        yield running


class Person:
    """One person's browser context (their own cookies), its console kept to check for CSP
    violations and errors."""

    def __init__(
        self, browser: Browser, server: Server, javascript: bool = True, **options: Any
    ) -> None:
        self.context: BrowserContext = browser.new_context(
            java_script_enabled=javascript, **options
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        self.console: list[ConsoleMessage] = []
        self.dialogs: list[str] = []
        self.page: Page = self.context.new_page()
        self.page.on("console", lambda message: self.console.append(message))
        self.page.on(
            "dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss())
        )
        self.url = server.url

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        """On the sign-in page (where any page sends whoever is not signed in)."""
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()

    def open(self, path: str) -> Page:
        self.page.goto(self.url + path)
        return self.page

    def problems(self) -> list[str]:
        return [f"{m.type}: {m.text}" for m in self.console if m.type in ("error", "warning")]


@pytest.fixture
def people(browser: Browser) -> Iterator[list[Person]]:
    opened: list[Person] = []
    yield opened
    for person in opened:
        person.context.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_two_people_work_on_one_issue(browser, server, smtp, people, javascript):
    admin, ana, bob = (Person(browser, server, javascript) for _ in range(3))
    people.extend((admin, ana, bob))

    admin.open("/")  # a browser at SIT's address gets the pages
    admin.sign_in("root")
    admin.page.get_by_role("link", name="Users").click()
    admin.page.get_by_label("Username").fill("bob")
    admin.page.get_by_label("Email").fill("bob@example.com")
    admin.page.get_by_label("First name").fill("Bob")
    admin.page.get_by_label("Password").fill(PASSWORD)
    admin.page.get_by_role("button", name="Create user").click()
    expect(admin.page.get_by_role("status")).to_contain_text("bob can now sign in")
    admin.page.get_by_role("link", name="Labels").click()
    admin.page.get_by_label("Name", exact=True).last.fill("bug")
    admin.page.get_by_role("button", name="Create label").click()
    expect(admin.page.get_by_label("Name", exact=True).first).to_have_value("bug")

    ana.open("/issues/new")
    ana.sign_in("alice")
    ana.page.get_by_label("Title").fill("Kettle leaks")
    ana.page.get_by_label("Description").fill("Water **everywhere**")
    ana.page.get_by_label("Assignee").select_option(label="bob (Bob )")
    ana.page.get_by_label("bug").check()
    ana.page.get_by_role("button", name="Create issue").click()
    expect(ana.page.get_by_role("heading", level=1)).to_contain_text("Kettle leaks")
    issue_url = ana.page.url

    (email,) = wait_until(lambda: smtp.to("bob@example.com"), 30, "bob's assignment email")
    link = LINK.search(email.part("plain")).group(0)
    assert link == issue_url
    bob.page.goto(link)
    bob.sign_in("bob")
    assert bob.page.url == link  # signed in, back on the issue
    bob.page.get_by_label("Comment").fill("On it: the *seal*")
    bob.page.get_by_role("button", name="Comment", exact=True).click()
    expect(bob.page.locator(".comment")).to_contain_text("On it: the seal")

    ana.page.reload()
    timeline = ana.page.locator(".timeline")
    expect(timeline).to_contain_text("On it: the seal")
    expect(timeline).to_contain_text("alice opened this issue")
    expect(ana.page.locator(".labels")).to_contain_text("bug")
    if javascript:
        ana.page.screenshot(path=SCREENSHOTS / "issue.png", full_page=True)
    ana.page.get_by_role("button", name="Close issue").click()
    expect(ana.page.locator(".facts")).to_contain_text("Closed")
    expect(timeline).to_contain_text("alice closed this")

    bob.page.get_by_role("link", name="Assigned to me").click()
    expect(bob.page.locator("main")).to_contain_text("No issues match.")
    bob.page.get_by_label("Status").select_option("")  # with JS it applies at once
    if not javascript:
        bob.page.get_by_role("button", name="Filter").click()
    expect(bob.page.locator(".issues")).to_contain_text("Kettle leaks")
    if javascript:
        ana.open("/issues/")
        ana.page.screenshot(path=SCREENSHOTS / "issues.png", full_page=True)
    for person in people:
        assert not person.problems(), person.problems()


def test_hostile_text_never_runs(browser, server, people):
    ana = Person(browser, server)
    people.append(ana)
    ana.open("/issues/new")
    ana.sign_in("alice")
    ana.page.get_by_label("Title").fill("<script>alert(1)</script>")
    ana.page.get_by_label("Description").fill(
        "[click me](javascript:alert(1)) <b onmouseover=alert(1)>x</b>"
    )
    ana.page.get_by_role("button", name="Create issue").click()
    ana.page.get_by_label("Comment").fill("<img src=x onerror=alert(1)>")
    ana.page.get_by_role("button", name="Comment", exact=True).click()
    expect(ana.page.get_by_role("heading", level=1)).to_contain_text("<script>alert(1)</script>")
    expect(ana.page.locator(".comment")).to_contain_text("<img src=x onerror=alert(1)>")
    ana.page.get_by_text("click me").click()  # plain text, not a link
    ana.page.reload()
    assert ana.dialogs == []
    assert (
        ana.page.locator("main script, main img, main [onerror], main a[href^=javascript]").count()
        == 0
    )
    assert not ana.problems(), ana.problems()


def test_a_form_from_another_origin_changes_nothing(browser, server, people):
    ana = Person(browser, server)
    people.append(ana)
    ana.open("/issues/")
    ana.sign_in("alice")
    forged = (
        f'<form method="post" action="{server.url}/issues/new">'
        '<input name="title" value="Forged"><button>Send</button></form>'
    )
    ana.page.set_content(forged)
    ana.page.get_by_role("button", name="Send").click()
    ana.page.wait_for_load_state()
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Issue.id))) == 0


PAGES = [
    "/issues/",
    "/issues/?q=kettle&status=O",
    "/issues/{pk}",
    "/issues/new",
    "/issues/{pk}/edit",
    "/issues/{pk}/comments/{cid}/edit",
    "/settings",
    "/admin/users",
    "/admin/labels",
]


def test_every_page_passes_axe_and_fits_360_px(browser, server, people, client, as_root):
    """As an admin who wrote the issue and its comment, so every page opens."""
    label = "needs-a-rather-long-label-name"
    client.post("/api/labels/", json={"name": label}, headers=as_root)
    body = {
        "title": "A title long enough to wrap " * 5,
        "labels": [label],
        "description": "x" * 300,
    }
    issue = client.post("/api/", json=body, headers=as_root).json
    said = {"body": "`" + "x" * 120 + "`"}
    comment = client.post(f"/api/{issue['id']}/comments/", json=said, headers=as_root).json
    admin = Person(browser, server, viewport={"width": 360, "height": 740})
    people.append(admin)
    failures = {}
    for path in ["/sign-in", *PAGES]:
        url = path.format(pk=issue["id"], cid=comment["id"])
        admin.open(url)
        results = Axe().run(admin.page)
        violations = results.response["violations"]
        serious = [v["id"] for v in violations if v["impact"] in ("serious", "critical")]
        width = admin.page.evaluate("document.documentElement.scrollWidth")
        if serious or width > 360:
            failures[url] = (serious, width)
        if path == "/sign-in":
            admin.sign_in("root")
    assert not failures, failures
    assert not admin.problems(), admin.problems()
