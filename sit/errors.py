"""Every error answer is `application/problem+json` (RFC 9457), and it is made here only."""

import json
from http import HTTPStatus
from typing import Any, NoReturn

from apiflask import APIFlask, HTTPError
from flask import Response, current_app
from sqlalchemy.exc import OperationalError, ProgrammingError
from werkzeug.exceptions import HTTPException, InternalServerError

PROBLEM_JSON = "application/problem+json"

# pydantic's wording, said the way a user of this API thinks of it
_MESSAGES = {"Extra inputs are not permitted": "unknown field"}
_WHOLE_BODY = "_schema"  # where APIFlask files errors about the body as a whole


def message(text: str) -> str:
    """pydantic's message, in this API's words."""
    text = text.removeprefix("Value error, ")
    if text.startswith("Input should be a valid dictionary"):
        return "must be a JSON object or a form"
    return _MESSAGES.get(text, text)


def document(
    status: int, detail: str, errors: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return body


def problem(
    status: int,
    detail: str,
    errors: dict[str, list[str]] | None = None,
    headers: Any = None,
) -> Response:
    response = current_app.json.response(document(status, detail, errors))
    response.status_code = status
    response.headers.update(headers or {})
    response.mimetype = PROBLEM_JSON
    return response


def http_problem(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP response, for a request that never reaches the app: gunicorn refuses it
    (`gunicorn.conf.py`), e.g. a request line over 4 KiB (414) or too large a header (431)."""
    body = json.dumps(document(status, detail or reason)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def invalid(errors: dict[str, list[str]]) -> NoReturn:
    """Answer 400 naming each field and what is wrong with it, as failed validation does."""
    raise HTTPError(400, extra_data={"errors": errors})


def _describe(errors: dict[str, list[str]]) -> str:
    return "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())


def from_http_error(error: HTTPError) -> Response:
    """APIFlask's errors: `abort()`, auth failures, schema validation (`detail` per location)."""
    errors = dict(error.extra_data.get("errors", {}))
    if error.status_code == 400 and isinstance(error.detail, dict):
        for fields in error.detail.values():
            for path, messages in fields.items():
                field = path.split(".")[0]  # a union's members add their names to the path
                field = "body" if field == _WHOLE_BODY else field
                errors.setdefault(field, []).extend(map(message, messages))
    detail = _describe(errors) if errors else error.message
    return problem(error.status_code, detail, errors, error.headers)


def from_werkzeug(error: HTTPException) -> Response:
    """Routing, method, size and JSON-decoding errors, and the 500 of an unhandled exception."""
    status = error.code or 500
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    detail = error.description or HTTPStatus(status).description
    if isinstance(error, InternalServerError):
        detail = "The server hit an unexpected error; it has been logged."
    return problem(status, detail, headers=headers)


NOT_MIGRATED = "The database is not migrated yet; run `flask db upgrade`."
MISSING_TABLE_OR_COLUMN = ("42P01", "42703")  # PostgreSQL's SQLSTATEs: undefined table, column


def not_migrated(error: Exception) -> bool:
    """Whether a database error says a table or column is missing: the server started before
    `flask db upgrade` (an OperationalError on SQLite, a ProgrammingError on PostgreSQL)."""
    cause = getattr(error, "orig", None)
    if getattr(cause, "sqlstate", None) in MISSING_TABLE_OR_COLUMN:
        return True
    return isinstance(error, OperationalError) and str(cause).startswith(
        ("no such table", "no such column")
    )


def from_database_unavailable(error: OperationalError | ProgrammingError) -> Response:
    """503 while the database cannot answer: unreachable, or not migrated yet. Any other
    ProgrammingError is a bug, left to the 500 handler."""
    retry = {"Retry-After": "5"}
    if not_migrated(error):
        current_app.logger.error("the database is not migrated yet: %s", error.orig)
        return problem(503, NOT_MIGRATED, None, retry)
    if isinstance(error, ProgrammingError):
        raise error
    current_app.logger.exception("database unavailable")
    return problem(503, "The database is unavailable; try again shortly.", None, retry)


def init_app(app: APIFlask) -> None:
    app.error_processor(from_http_error)
    app.register_error_handler(HTTPException, from_werkzeug)
    app.register_error_handler(OperationalError, from_database_unavailable)
    app.register_error_handler(ProgrammingError, from_database_unavailable)
