"""The OpenAPI document's settings, and the `/docs` page with its assets served by SIT itself."""

import json
import re
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from apiflask import APIFlask
from flask import Blueprint, current_app
from werkzeug.routing import Map, Rule

from sit.errors import PROBLEM_JSON

ASSETS = "/docs/assets"
REF = "#/components/schemas/"

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "What is wrong with each field, for a 400",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}

SETTINGS = {
    "VALIDATION_ERROR_STATUS_CODE": 400,
    "VALIDATION_ERROR_SCHEMA": PROBLEM_SCHEMA,
    "HTTP_ERROR_SCHEMA": PROBLEM_SCHEMA,
    "DOCS_FAVICON": f"{ASSETS}/favicon-32x32.png",
    "SWAGGER_UI_CSS": f"{ASSETS}/swagger-ui.css",
    "SWAGGER_UI_BUNDLE_JS": f"{ASSETS}/swagger-ui-bundle.js",
    "SWAGGER_UI_STANDALONE_PRESET_JS": f"{ASSETS}/swagger-ui-standalone-preset.js",
    "SWAGGER_UI_CONFIG": {"persistAuthorization": True},
}


BODY_ERRORS = {  # sent before any view runs, for every request with a body
    "413": "The body is over 1 MiB",
    "415": "The body is neither JSON nor a form",
}
# gunicorn's, for a query too long: its request line is over 4 KiB (`gunicorn.conf.py`)
LONG_QUERY = "The request line (the path and its query) is over 4 KiB"
ERROR_HEADERS = {
    "401": {"WWW-Authenticate": ("string", "The scheme to authenticate with")},
    "429": {"Retry-After": ("integer", "Seconds until a login may be tried again")},
}


def problem(description: str) -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/HTTPError"}
    return {"description": description, "content": {PROBLEM_JSON: {"schema": schema}}}


def header(kind: str, description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "schema": {"type": kind}}


CONDITIONAL = ("/api/{pk}/", "/api/{pk}/comments/{cid}/")  # issues and comments have ETags
CONDITIONS = {  # the conditional request headers they honour, by method
    "get": ("If-None-Match", "An ETag the caller has: `304` while it is current"),
    "put": ("If-Match", "The ETag the change is based on: `412` when it is no longer current"),
    "patch": ("If-Match", "The ETag the change is based on: `412` when it is no longer current"),
    "delete": ("If-Match", "The ETag the deletion is based on: `412` when it is no longer current"),
}


def conditional(method: str) -> dict[str, Any]:
    name, description = CONDITIONS[method]
    return {"in": "header", "name": name, "description": description, "schema": {"type": "string"}}


def unavailable() -> dict[str, Any]:
    """The answer of any operation while the database cannot be reached (`sit.errors`)."""
    response = problem("The database is unavailable; try again shortly")
    response["headers"] = {"Retry-After": header("integer", "Seconds to wait before trying again")}
    return response


DOCUMENTED = {"GET", "POST", "PUT", "PATCH", "DELETE"}  # the methods APIFlask documents


def documented_methods(rule: Rule) -> set[str]:
    return DOCUMENTED & set(rule.methods or ())


def operation_ids(url_map: Map) -> dict[tuple[str, str], tuple[str, str]]:
    """Each route's operationId, by OpenAPI path and method, with the path it repeats.

    The id is the view's name (`list_issues`), which generated clients name their function
    after; `_<method>` follows when the view answers several methods (`unsubscribe_post`), and
    `_at_<path>` on a path other than the one `url_for` builds for the view: `GET /` repeats
    `GET /api/`, so it is `list_issues_at_root`.
    """
    found = {}
    for rule in url_map.iter_rules():
        routes = list(url_map.iter_rules(rule.endpoint))
        methods = set().union(*map(documented_methods, routes))
        view = rule.endpoint.rsplit(".", 1)[-1]
        for method in documented_methods(rule):
            home = next(route for route in routes if method in documented_methods(route)).rule
            name = f"{view}_{method.lower()}" if len(methods) > 1 else view
            if rule.rule != home:
                words = re.sub(r"\W+", "_", re.sub(r"<[^>]*>", "", rule.rule)).strip("_")
                name += f"_at_{words or 'root'}"
            found[openapi_path(rule.rule), method.lower()] = (name, openapi_path(home))
    return found


def openapi_path(rule: str) -> str:
    """A route's path as APIFlask writes it in the document: `/api/<int:pk>/` is `/api/{pk}/`."""
    return re.sub(r"<([^<:]+:)?", "{", rule).replace(">", "}")


def lead_with_json(body: dict[str, Any], schemas: dict[str, Any]) -> None:
    """`application/json` first, which generators take as the default, and every other media
    type under a schema name of its own (`IssueInForm`): openapi-python-client tells media types
    apart by their model's class, so with one class for both it sent a form labelled JSON."""
    content = body["content"]
    json_media = content.pop("application/json", None)
    if json_media is None:
        return
    for media in content.values():
        if "$ref" in media["schema"] and media["schema"] == json_media["schema"]:
            name = media["schema"]["$ref"].rsplit("/", 1)[1]
            schemas.setdefault(f"{name}Form", schemas[name] | {"title": f"{name}Form"})
            media["schema"] = {"$ref": f"#/components/schemas/{name}Form"}
    body["content"] = {"application/json": json_media, **content}


def share_nested(spec: dict[str, Any]) -> dict[str, Any]:
    """APIFlask files each model an answer nests under `Outer.Inner`, a copy of `Inner` where
    that is documented too: generators name both after their title `Inner` and drop the second.
    Each such copy goes, for `Inner` itself."""
    schemas = spec.get("components", {}).get("schemas", {})
    copies = {
        name: name.rsplit(".", 1)[1]
        for name, schema in schemas.items()
        if "." in name and schemas.get(name.rsplit(".", 1)[1]) == schema
    }
    for copy in copies:
        del schemas[copy]
    text = json.dumps(spec)
    for copy, original in copies.items():
        text = text.replace(f'"{REF}{copy}"', f'"{REF}{original}"')
    return json.loads(text)


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    """Document what SIT's shared code sends, as it sends it: body errors on every operation
    with a body, 414 on every one with a query, 503 on every operation, the headers of 401 and
    429, and errors as `application/problem+json`; and name every operation, and lead with
    JSON, for generators."""
    ids = operation_ids(current_app.url_map)
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            operation["operationId"], home = ids[path, method]
            if path != home:
                operation["description"] = f"The same as `{method.upper()} {home}`."
            if path in CONDITIONAL and method in CONDITIONS:
                operation.setdefault("parameters", []).append(conditional(method))
            responses = operation.setdefault("responses", {})
            responses.setdefault("503", unavailable())
            if any(p.get("in") == "query" for p in operation.get("parameters", [])):
                responses.setdefault("414", problem(LONG_QUERY))
            if "requestBody" in operation:
                lead_with_json(operation["requestBody"], spec["components"]["schemas"])
                for status, description in BODY_ERRORS.items():
                    responses.setdefault(status, problem(description))
            for status, response in responses.items():
                headers = ERROR_HEADERS.get(str(status), {})
                for name, (kind, description) in headers.items():
                    response.setdefault("headers", {})[name] = header(kind, description)
                content = response.get("content", {})
                if str(status) >= "400" and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
            operation["responses"] = dict(sorted(responses.items()))
    return share_nested(spec)


def swagger_ui_assets() -> Path:
    """swagger-ui-py's folder of Swagger UI files, found without importing the package: its
    import brings PyYAML and urllib.request, ~2 MiB in every worker that SIT never uses."""
    return Path(find_spec("swagger_ui").origin).parent / "static"


DESCRIPTION = """\
SIT is an issue tracker: this is its REST API. People who prefer a browser use
[the web interface]({public_url}/issues/), served by the same application.

**Getting a token.** `POST /get-token/` with `username` and `password` (a form, JSON or HTTP
Basic) answers an access token; send it as `Authorization: Bearer <token>` (press *Authorize*
above to try the API here). A token lasts `TOKEN_MAX_AGE`; changing your password, or an admin's
`flask sit revoke-tokens`, ends every token issued before. Ten failed logins for a username, or
fifty from one address, within five minutes are answered `429`.

**Emails.** Whoever an issue is assigned to gets an email a while later (`ASSIGNMENT_EMAIL_DELAY`)
unless it was reassigned meanwhile; everyone gets a digest of their assigned issues; watchers
get the comments. Every email links to the issue's page, and each kind can be turned off in
one click or with `PATCH /api/users/me/`.
"""


def init_app(app: APIFlask) -> None:
    app.config.update(SETTINGS)
    app.config["DESCRIPTION"] = DESCRIPTION.format(public_url=app.config["PUBLIC_URL"])
    app.config["SERVERS"] = [{"url": app.config["PUBLIC_URL"]}]  # never the request's Host
    app.spec_processor(complete)
    assets = Blueprint(
        "docs_assets", __name__, static_folder=swagger_ui_assets(), static_url_path=ASSETS
    )
    app.register_blueprint(assets)
