"""Security headers on every answer: no MIME sniffing, and a Content-Security-Policy.

An API answer is data, never a page: its policy lets a browser load, run or frame nothing. The
`/docs` page is Swagger UI, whose scripts, styles and images SIT serves itself (`sit.docs`): its
policy allows SIT's own origin only, and its inline script and style by their hashes, computed
from the page as sent, so no injected inline code and no outside host could run there. The
unsubscribe pages (`sit.unsubscribe`) are plain HTML whose one form posts back to SIT: their
policy allows nothing but that form. The web interface (`sit.web`) loads its own scripts,
styles and images only, never inline ones, and its forms post to SIT only.
"""

import re
from base64 import b64encode
from hashlib import sha256

from apiflask import APIFlask
from flask import Response, request

API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' {scripts}; style-src 'self' {styles}; "
    "img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_ENDPOINT = "openapi.docs"  # APIFlask's Swagger UI page
FORM_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
FORM_BLUEPRINT = "unsubscribe"
WEB_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
WEB_BLUEPRINT = "web"


def inline_hashes(tag: str, html: str) -> str:
    """CSP sources allowing each inline `<tag>…</tag>` of `html` (no attributes) by its hash."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.DOTALL)
    digests = (b64encode(sha256(body.encode()).digest()).decode() for body in bodies)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


def docs_policy(html: str) -> str:
    return DOCS_POLICY.format(
        scripts=inline_hashes("script", html), styles=inline_hashes("style", html)
    )


def add_headers(response: Response) -> Response:
    """Runs on every response, error answers and 304s included."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint == DOCS_ENDPOINT and response.mimetype == "text/html":
        policy = docs_policy(response.get_data(as_text=True))
    elif request.blueprint == FORM_BLUEPRINT and response.mimetype == "text/html":
        policy = FORM_POLICY
    elif request.blueprint == WEB_BLUEPRINT:
        policy = WEB_POLICY
    else:
        policy = API_POLICY
    response.headers["Content-Security-Policy"] = policy
    return response


def init_app(app: APIFlask) -> None:
    app.after_request(add_headers)
