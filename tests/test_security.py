"""Security headers: every answer says `nosniff` and carries a Content-Security-Policy; the
`/docs` page's allows SIT's own assets, and its inline script only by that script's hash."""

import re
from base64 import b64encode
from hashlib import sha256

import pytest


def policy(response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy, as {directive: [source, ...]}."""
    directives = response.headers["Content-Security-Policy"].split(";")
    return {name: sources for name, *sources in (d.split() for d in directives)}


def assert_inert(response) -> None:
    """The headers of an answer that is data: nothing may load, run or frame it."""
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert policy(response) == {
        "default-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
    }


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/api/", True, 200),
        ("HEAD", "/api/", True, 200),
        ("GET", "/openapi.json", False, 200),
        ("GET", "/api/", False, 401),
        ("GET", "/api/999/", True, 404),
        ("GET", "/nowhere", False, 404),
        ("DELETE", "/healthz", False, 405),
    ],
)
def test_json_and_problem_answers_are_inert(client, as_alice, method, path, token, status):
    response = client.open(path, method=method, headers=as_alice if token else {})
    assert response.status_code == status
    assert_inert(response)


def test_unhandled_exception_500_is_inert_too(boom):
    assert boom.status_code == 500
    assert_inert(boom)


def test_not_modified_asset_keeps_the_headers(client):
    first = client.get("/docs/assets/favicon-32x32.png")
    first.close()
    again = client.get(
        "/docs/assets/favicon-32x32.png", headers={"If-None-Match": first.headers["ETag"]}
    )
    again.close()
    assert again.status_code == 304
    assert_inert(again)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_docs_page_runs_only_own_assets_and_its_inline_script_by_hash(client, method):
    page = client.open("/docs", method=method)
    html = client.get("/docs").get_data(as_text=True)  # a HEAD answer has no body to read
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)  # the one inline script
    digest = b64encode(sha256(script.encode()).digest()).decode()
    csp = policy(page)
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert csp["script-src"] == ["'self'", f"'sha256-{digest}'"]
    assert csp["default-src"] == csp["frame-ancestors"] == csp["base-uri"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    sources = {source for sources in csp.values() for source in sources}
    assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources
    assert not any(re.match(r"https?:|\*", source) for source in sources), sources
