"""The OpenAPI document's settings, and the `/docs` page with its assets served by SIT itself."""

from importlib.resources import files
from typing import Any

from apiflask import APIFlask
from flask import Blueprint

from sit.errors import PROBLEM_JSON

ASSETS = "/docs/assets"

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


def problem_content(spec: dict[str, Any]) -> dict[str, Any]:
    """Error answers are documented as `application/problem+json`, as they are sent."""
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(status) >= "400" and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return spec


def init_app(app: APIFlask) -> None:
    app.config.update(SETTINGS)
    app.config["SERVERS"] = [{"url": app.config["PUBLIC_URL"]}]  # never the request's Host
    app.spec_processor(problem_content)
    assets = Blueprint(
        "docs_assets",
        __name__,
        static_folder=str(files("swagger_ui") / "static"),
        static_url_path=ASSETS,
    )
    app.register_blueprint(assets)
