"""The bare baseline: a WSGI app that answers fixed issue documents, with no framework, no
auth and no database. Served with SIT's gunicorn settings, it is the ceiling SIT is compared to."""

import json
from collections.abc import Callable, Iterable
from typing import Any

PUBLIC_URL = "http://127.0.0.1:8000"


def issue(pk: int) -> dict[str, Any]:
    return {
        "id": pk,
        "issue_id": f"{pk:012x}",
        "title": f"Demo issue {pk}: login",
        "description": "login crash slow page export report search email cache login page slow",
        "assigned_to": 2,
        "created_by": "demo1",
        "status": "O",
        "created_at": "2026-11-24T10:00:00Z",
        "updated_at": "2026-11-24T10:00:00Z",
        "url": f"{PUBLIC_URL}/api/{pk}/",
    }


ONE = json.dumps(issue(7)).encode()
PAGE = json.dumps([issue(pk) for pk in range(1000, 970, -1)]).encode()
LINK = f'<{PUBLIC_URL}/api/?page=1>; rel="first", <{PUBLIC_URL}/api/?page=2>; rel="next"'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """GET /api/<id>/ one issue; GET / or /api/ a page of 30; POST 201; PATCH/PUT 200."""
    method = environ["REQUEST_METHOD"]
    if method in ("POST", "PUT", "PATCH"):
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    is_list = environ["PATH_INFO"] in ("/", "/api/", "/api")
    body, status, extra = ONE, "200 OK", [("ETag", '"000000000007-1"')]
    if method == "POST":
        status, extra = "201 Created", [*extra, ("Location", f"{PUBLIC_URL}/api/7/")]
    elif is_list:
        body, extra = PAGE, [("Link", LINK), ("X-Total-Count", "1000")]
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status, headers + extra)
    return [body]
