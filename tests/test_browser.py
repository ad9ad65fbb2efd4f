"""The `/docs` and unsubscribe pages in a real browser, under their real
Content-Security-Policy: Debian's chromium (never a downloaded one), driven by Playwright, against
real gunicorn. Every wait has a deadline."""

from urllib.parse import urlsplit

import sqlalchemy as sa
from helpers import gunicorn
from playwright.sync_api import ConsoleMessage, Request, expect

from sit.auth import issue_token
from sit.extensions import db
from sit.models import User
from sit.unsubscribe import unsubscribe_url

TIMEOUT_MS = 10_000


def test_docs_page_authorizes_and_lists_issues_without_csp_violations(
    instance, tmp_path, browser, alice, new_issue
):
    new_issue(title="Kettle on fire", assigned_to=None)
    token = issue_token(alice, 3600)
    console: list[ConsoleMessage] = []
    requested: list[Request] = []
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("console", lambda message: console.append(message))
    page.on("request", lambda request: requested.append(request))

    with gunicorn(instance, 1) as server:  # its PUBLIC_URL, so "Try it out" calls it
        try:
            page.goto(f"{server.url}/docs", wait_until="load")
            blocked = [m.text for m in console if "Content Security Policy" in m.text]
            assert not blocked, blocked

            page.get_by_role("button", name="Authorize").click()
            page.get_by_label("auth-bearer-value").fill(token)
            page.get_by_role("button", name="Apply credentials").click()
            page.get_by_role("button", name="Close").click()

            operation = page.locator("#operations-Issues-list_issues")  # GET /api/
            operation.locator(".opblock-summary-control").click()
            operation.get_by_role("button", name="Try it out").click()
            with page.expect_response(f"{server.url}/api/?*") as answer:
                operation.get_by_role("button", name="Execute").click()
            assert answer.value.status == 200
            assert answer.value.request.headers["authorization"] == f"Bearer {token}"
            answered = operation.locator(".live-responses-table .response")
            expect(answered.locator(".response-col_status")).to_have_text("200", timeout=TIMEOUT_MS)
            body = answered.locator("code.language-json")  # the response body, highlighted
            expect(body).to_contain_text('"title": "Kettle on fire"', timeout=TIMEOUT_MS)
            expect(body).to_contain_text('"created_by": "alice"', timeout=TIMEOUT_MS)
        finally:
            page.screenshot(path=tmp_path / "docs.png", full_page=True)

    outside = [r.url for r in requested if not r.url.startswith(f"{server.url}/")]
    assert not outside, outside
    problems = [f"{m.type}: {m.text}" for m in console if m.type in ("error", "warning")]
    assert not problems, problems


def test_unsubscribe_page_button_unsubscribes_under_its_policy(instance, tmp_path, browser, alice):
    console: list[ConsoleMessage] = []
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("console", lambda message: console.append(message))

    with gunicorn(instance, 1) as server:
        url = server.url + urlsplit(unsubscribe_url(alice.id, "digest")).path
        try:
            page.goto(url, wait_until="load")
            expect(page.get_by_role("heading")).to_have_text("Unsubscribe")
            assert notify_digest(alice) is True  # showing the page changed nothing

            with page.expect_navigation():
                page.get_by_role("button", name="Unsubscribe").click()
            expect(page.get_by_role("heading")).to_have_text("Unsubscribed")
            expect(page.locator("body")).to_contain_text("alice no longer gets the digest")
            assert page.url == url
        finally:
            page.screenshot(path=tmp_path / "unsubscribe.png", full_page=True)

    assert notify_digest(alice) is False
    problems = [f"{m.type}: {m.text}" for m in console if m.type in ("error", "warning")]
    assert not problems, problems


def notify_digest(user: User) -> bool:
    """The user's preference as the database has it now, whoever wrote it."""
    db.session.rollback()  # end the last read's snapshot
    return db.session.scalar(sa.select(User.notify_digest).where(User.id == user.id))
