"""A client generated from SIT's `/openapi.json` with openapi-python-client, as a new user would
make one, runs the walkthrough against real gunicorn: token, create, list, get, patch, a 400, a
comment and the issue's history."""

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import requests
from helpers import BIN, PASSWORD, gunicorn

PACKAGE = "sit_client"  # the generator's name for a client of the API titled "SIT"


def generate(document: Path, output: Path) -> None:
    """`openapi-python-client generate`, with ruff on PATH for its post hooks; nothing may be
    skipped (the generator leaves out what it cannot read, with a warning)."""
    result = subprocess.run(
        [BIN / "openapi-python-client", "generate", "--path", document, "--output-path", output],
        env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.fixture
def generated() -> Iterator[None]:
    """Forgets the generated package once the test imported it."""
    yield
    for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
        del sys.modules[name]


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_client_runs_the_walkthrough(instance, tmp_path, monkeypatch, generated, alice):
    with gunicorn(instance, 1) as server:
        document = tmp_path / "openapi.json"
        document.write_bytes(requests.get(f"{server.url}/openapi.json", timeout=10).content)
        generate(document, tmp_path / "client")
        monkeypatch.syspath_prepend(tmp_path / "client")
        clients, models = module("client"), module("models")
        sent: list[httpx.Request] = []
        hooks = {"event_hooks": {"request": [sent.append]}}

        anonymous = clients.Client(base_url=server.url, httpx_args=hooks)
        credentials = models.Credentials(username="alice", password=PASSWORD)
        token = module("api.authentication.get_token").sync(client=anonymous, body=credentials)
        assert isinstance(token, models.TokenOut) and token.token_type == "Bearer"
        alices = clients.AuthenticatedClient(
            base_url=server.url, token=token.token, httpx_args=hooks
        )

        issue = models.IssueIn(title="Printer on fire", description="Smoke", assigned_to=alice.id)
        created = module("api.issues.create_issue").sync_detailed(client=alices, body=issue)
        assert created.status_code == 201
        assert (created.parsed.title, created.parsed.created_by) == ("Printer on fire", "alice")
        assert created.headers["Location"] == created.parsed.url
        pk = created.parsed.id

        listed = module("api.issues.list_issues").sync(client=alices, q="printer")
        assert [(found.id, found.assigned_to) for found in listed] == [(pk, alice.id)]

        got = module("api.issues.get_issue").sync_detailed(client=alices, pk=pk)
        assert got.status_code == 200 and got.parsed.description == "Smoke"
        etag = got.headers["ETag"]

        update_issue = module("api.issues.update_issue")
        close = models.IssuePatch(status=models.IssuePatchStatus.C)
        patched = update_issue.sync_detailed(client=alices, pk=pk, body=close, if_match=etag)
        assert patched.status_code == 200 and patched.parsed.status == "C"
        assert patched.headers["ETag"] != etag
        stale = update_issue.sync_detailed(client=alices, pk=pk, body=close, if_match=etag)
        assert stale.status_code == 412 and isinstance(stale.parsed, models.HTTPError)

        invalid = module("api.issues.create_issue").sync_detailed(
            client=alices, body=models.IssueIn(title="")
        )
        assert invalid.status_code == 400 and isinstance(invalid.parsed, models.ValidationError)
        assert invalid.parsed.errors["title"] == ["String should have at least 1 character"]

        said = models.CommentIn(body="Which printer?")
        comment = module("api.comments.create_comment").sync_detailed(pk, client=alices, body=said)
        assert comment.status_code == 201 and comment.parsed.author.username == "alice"
        assert comment.headers["Location"] == comment.parsed.url
        comments = module("api.comments.list_comments").sync(pk, client=alices)
        assert [(found.id, found.body) for found in comments] == [(comment.parsed.id, said.body)]
        history = module("api.history.list_events").sync(pk, client=alices)
        assert [event.event for event in history] == ["created", "closed", "commented"]
        assert history[-1].comment == comment.parsed.id

    writes = [request for request in sent if request.method in ("POST", "PATCH")]
    assert len(writes) == 6
    for request in writes:  # as JSON, and labelled so: never a form labelled JSON
        assert request.headers["Content-Type"] == "application/json"
        assert isinstance(json.loads(request.content), dict)
