"""The OpenAPI document and the `/docs` page, served without internet access."""

import json
import re

import pytest
from openapi_spec_validator import validate

# The blueprints of what is not the API: the document itself, its page's assets, Prometheus's
# metrics, the unsubscribe pages a mail client opens and the web interface's pages.
NOT_API = {"openapi", "docs_assets", "metrics", "unsubscribe", "web"}


def documented_path(rule):
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json


def test_document_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_every_path_and_method_is_documented(app, spec):
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in NOT_API:
            path = documented_path(rule)
            documented = {m.upper() for m in spec["paths"][path]}
            assert rule.methods - {"HEAD", "OPTIONS"} <= documented, path
            checked += 1
    assert checked >= 25


def test_every_operation_is_named_after_its_view(app, spec):
    """Generated clients name their functions after operationIds: each is its view's name, or
    that and `_at_<path>` on a path other than the one `url_for` builds (`GET /` for `/api/`)."""
    named = []
    for rule in app.url_map.iter_rules():
        view = rule.endpoint.rsplit(".", 1)[-1]
        home = documented_path(next(app.url_map.iter_rules(rule.endpoint)))
        for method, operation in spec["paths"].get(documented_path(rule), {}).items():
            if method.upper() in rule.methods:
                alias = "" if documented_path(rule) == home else "_at_[a-z_]+"
                pattern = f"{view}(_{method})?{alias}"
                assert re.fullmatch(pattern, operation["operationId"]), (rule, method)
                named.append(operation["operationId"])
    everything = [operation for path in spec["paths"].values() for operation in path.values()]
    assert len(set(named)) == len(named) == len(everything)
    root, api = spec["paths"]["/"], spec["paths"]["/api/"]
    assert (api["get"]["operationId"], root["get"]["operationId"]) == (
        "list_issues",
        "list_issues_at_root",
    )
    assert root["post"]["description"] == "The same as `POST /api/`."


def test_a_view_answering_several_methods_names_each(app, client):
    @app.route("/both/", methods=["GET", "POST"])
    def both() -> str:
        return ""

    operations = client.get("/openapi.json").json["paths"]["/both/"]
    assert {method: operations[method]["operationId"] for method in operations} == {
        "get": "both_get",
        "post": "both_post",
    }


def test_every_request_body_leads_with_json_and_gives_each_type_a_schema_of_its_own(spec):
    """Generators take the first media type as the default; openapi-python-client tells them apart
    by their schema, so two with one schema make it send a form labelled JSON."""
    bodies = [
        operation["requestBody"]["content"]
        for operations in spec["paths"].values()
        for operation in operations.values()
        if "requestBody" in operation
    ]
    assert len(bodies) >= 5 and any(len(content) > 1 for content in bodies)
    for content in bodies:
        assert next(iter(content)) == "application/json"
        schemas = [json.dumps(media["schema"], sort_keys=True) for media in content.values()]
        assert len(set(schemas)) == len(schemas)


def test_token_security_scheme_and_errors_as_problem_json(spec):
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= next(iter(schemes.values())).items()
    patch = spec["paths"]["/api/{pk}/"]["patch"]
    assert {"200", "400", "401", "403", "404", "412"} <= set(patch["responses"])
    for status in ("400", "401", "403", "404", "412"):
        assert list(patch["responses"][status]["content"]) == ["application/problem+json"]
    assert "429" in spec["paths"]["/get-token/"]["post"]["responses"]


def test_servers_come_from_public_url_never_the_host_header(client):
    spec = client.get("/openapi.json", headers={"Host": "evil.example"}).json
    assert spec["servers"] == [{"url": "http://sit.test"}]


def test_docs_page_loads_only_its_own_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls, html
    assert all(url.startswith("/") for url in urls), urls
    assert "//" not in "".join(urls)
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.data) > 1000
        asset.close()


def test_answers_sent_by_shared_code_are_documented(spec):
    create = spec["paths"]["/api/"]["post"]["responses"]
    assert {"ETag", "Location"} <= set(create["201"]["headers"])
    assert {"413", "415"} <= set(create)
    assert "WWW-Authenticate" in create["401"]["headers"]
    assert "Retry-After" in spec["paths"]["/get-token/"]["post"]["responses"]["429"]["headers"]
    assert "ETag" in spec["paths"]["/api/{pk}/"]["get"]["responses"]["304"]["headers"]
    delete = spec["paths"]["/api/{pk}/"]["delete"]["responses"]
    assert "412" in delete and "409" not in delete  # a change without If-Match never conflicts
    unavailable = spec["paths"]["/api/"]["get"]["responses"]["503"]
    assert "Retry-After" in unavailable["headers"]
    assert "application/problem+json" in unavailable["content"]


def test_output_shapes_are_documented_as_sent(spec):
    issue = spec["components"]["schemas"]["IssueOut"]
    assert {"assigned_to", "created_by", "url"} <= set(issue["required"])
    patch = spec["components"]["schemas"]["IssuePatch"]["properties"]
    assert patch["title"]["type"] == "string" and "default" not in patch["title"]


def test_conditional_request_headers_are_documented(spec):
    issue = spec["paths"]["/api/{pk}/"]
    headers = {
        method: [p["name"] for p in issue[method]["parameters"] if p["in"] == "header"]
        for method in ("get", "put", "patch", "delete")
    }
    assert headers == {
        "get": ["If-None-Match"],
        "put": ["If-Match"],
        "patch": ["If-Match"],
        "delete": ["If-Match"],
    }


def test_the_document_says_how_to_get_a_token_and_links_the_pages(spec):
    description = spec["info"]["description"]
    assert "POST /get-token/" in description and "Authorization: Bearer" in description
    assert "(http://sit.test/issues/)" in description
    assert "email" in description
