"""The real thing: gunicorn with several workers serving SIT on a temporary SQLite database."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers import (
    BIN,
    CLOSE,
    PASSWORD,
    ROOT,
    cli_create_user,
    flask_cli,
    free_port,
    gunicorn,
    login,
    signed_in,
)

from sit.auth import THROTTLE_LIMIT
from sit.models import User

# The access log with the worker's pid, so a test can show its requests reached several workers.
PID_ACCESS_LOG = {"GUNICORN_CMD_ARGS": "--access-logformat 'access %(p)s %(s)s \"%(r)s\"'"}
ACCESS_LINE = re.compile(r'^access <(\d+)> (\d{3}) "(\S+) ([^\s?]+)')


def at_once(send: Callable[[int], requests.Response], count: int, threads: int) -> list[Any]:
    """Send `count` requests from `threads` threads; the responses in order."""
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(send, range(count)))


def workers_that_answered(instance: Path, method: str, path: str, status: int) -> Counter[int]:
    """How many `method path` requests each worker pid answered with `status`, from the log."""
    served: Counter[int] = Counter()
    for line in (instance / "gunicorn.log").read_text().splitlines():
        match = ACCESS_LINE.match(line)
        if match and match.group(2, 3, 4) == (str(status), method, path):
            served[int(match.group(1))] += 1
    return served


def test_300_concurrent_creates_across_workers_all_succeed(instance: Path) -> None:
    cli_create_user(instance, "alice")
    bob = cli_create_user(instance, "bob")
    with gunicorn(instance, workers=4, **PID_ACCESS_LOG) as server:
        url = server.url
        as_alice = signed_in(url, "alice")

        def create(n: int) -> requests.Response:
            body = {"title": f"Concurrent issue {n}", "assigned_to": bob}
            return requests.post(f"{url}/api/", json=body, headers=as_alice, timeout=60)

        started = time.perf_counter()
        responses = at_once(create, 300, threads=16)
        elapsed = time.perf_counter() - started
        print(f"\n300 creates, 16 threads, 4 workers: {elapsed:.2f} s, {300 / elapsed:.0f} req/s")

        failed = [(r.status_code, r.text) for r in responses if r.status_code != 201]
        assert not failed, failed[:3]
        listed = []
        for page in (1, 2, 3):
            params = {"per_page": 100, "page": page}
            response = requests.get(f"{url}/api/", params=params, headers=as_alice, timeout=30)
            assert response.status_code == 200, response.text
            assert response.headers["X-Total-Count"] == "300"
            listed += response.json()

    created = [r.json() for r in responses]
    assert len({issue["id"] for issue in created}) == 300
    assert len({issue["issue_id"] for issue in created}) == 300
    assert {issue["id"] for issue in listed} == {issue["id"] for issue in created}
    assert len({issue["issue_id"] for issue in listed}) == 300
    assert {(issue["created_by"], issue["assigned_to"]) for issue in listed} == {("alice", bob)}
    log = (instance / "gunicorn.log").read_text()
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert len(workers_that_answered(instance, "POST", "/api/", 201)) >= 2


def version(response: requests.Response) -> int:
    """The issue's version, from the ETag (`"<issue_id>-<version>"`)."""
    return int(response.headers["ETag"].strip('"').rsplit("-", 1)[1])


def test_480_concurrent_unconditional_patches_of_one_issue_all_apply(
    instance: Path, alice: User
) -> None:
    """A change without If-Match applies to the current version, whatever changed it meanwhile:
    never a 409. With If-Match, a version that is no longer current is still a 412."""
    with gunicorn(instance, workers=4) as server:
        as_alice = signed_in(server.url, "alice")
        created = requests.post(
            f"{server.url}/api/", json={"title": "Contended"}, headers=as_alice, timeout=30
        )
        path = f"{server.url}/api/{created.json()['id']}/"

        def patch(n: int, **headers: str) -> requests.Response:
            body = {"title": f"Change {n}", "description": f"By request {n}"}
            return requests.patch(path, json=body, headers=as_alice | headers, timeout=60)

        started = time.perf_counter()
        responses = at_once(patch, 480, threads=16)
        elapsed = time.perf_counter() - started
        statuses = Counter(r.status_code for r in responses)
        print(f"\n480 PATCHes of one issue, 16 threads, 4 workers: {elapsed:.2f} s, {statuses}")
        final = requests.get(path, headers=as_alice, timeout=30)
        stale = patch(-1, **{"If-Match": created.headers["ETag"]})
        racing = at_once(lambda n: patch(n, **{"If-Match": final.headers["ETag"]}), 16, threads=16)

    assert statuses == {200: 480}, [r.text for r in responses if r.status_code != 200][:3]
    # Each change applied to the version before it: 480 versions after the first, once each.
    assert sorted(version(r) for r in responses) == list(range(2, 482))
    [last] = [r.json() for r in responses if version(r) == 481]
    assert version(final) == 481 and final.json() == last
    assert stale.status_code == 412, stale.text
    assert sorted(r.status_code for r in racing) == [200] + [412] * 15


def test_login_throttle_holds_across_workers(instance: Path) -> None:
    cli_create_user(instance, "alice")
    cli_create_user(instance, "bob")
    with gunicorn(instance, workers=4, **PID_ACCESS_LOG) as server:
        url = server.url
        failures = at_once(lambda _: login(url, "alice", "wrong"), THROTTLE_LIMIT, threads=5)
        assert [r.status_code for r in failures] == [401] * THROTTLE_LIMIT

        locked = login(url, "alice", PASSWORD)
        assert locked.status_code == 429, locked.text
        assert 1 <= int(locked.headers["Retry-After"]) <= 300
        assert locked.headers["Content-Type"] == "application/problem+json"
        assert locked.json()["status"] == 429
        assert login(url, "bob").status_code == 200

    # No single worker saw all ten failures, so a per-process count could not have locked alice.
    failed_on = workers_that_answered(instance, "POST", "/get-token/", 401)
    assert sum(failed_on.values()) == THROTTLE_LIMIT
    assert len(failed_on) >= 2, failed_on


def test_parallel_guesses_cannot_slip_under_the_throttle(instance: Path) -> None:
    """Each attempt is counted before its password is hashed, so a burst gets 10 guesses."""
    cli_create_user(instance, "alice")
    with gunicorn(instance, workers=4) as server:
        url = server.url
        burst = at_once(lambda _: login(url, "alice", "wrong"), 4 * THROTTLE_LIMIT, threads=16)
    statuses = Counter(r.status_code for r in burst)
    assert statuses == {401: THROTTLE_LIMIT, 429: 3 * THROTTLE_LIMIT}


def test_tokens_never_reach_the_server_log(instance: Path) -> None:
    cli_create_user(instance, "alice")
    with gunicorn(instance, workers=2) as server:
        token = login(server.url, "alice").json()["token"]
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for scheme, sent in [("Bearer", token), ("Token", token), ("Bearer", tampered)]:
            headers = {"Authorization": f"{scheme} {sent}"} | CLOSE
            for path in ("/api/", "/api/1/", "/api/users/me/", "/nowhere"):
                requests.get(server.url + path, headers=headers, timeout=10)
            requests.post(server.url + "/api/", json={"title": 1}, headers=headers, timeout=10)
        revoked = flask_cli(instance, "sit", "revoke-tokens", "alice")
        assert revoked.returncode == 0, revoked.stderr
        answer = requests.get(f"{server.url}/api/", headers=headers, timeout=10)
        assert answer.status_code == 401
    log = (instance / "gunicorn.log").read_text()
    assert log.count('"GET /api/users/me/') == 3, log  # the requests were logged
    signature = token.rsplit(".", 1)[-1]
    assert token not in log and signature not in log and tampered not in log


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would, and read the whole answer (the server closes)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_requests_gunicorn_refuses_are_answered_in_problem_json(instance: Path) -> None:
    """gunicorn refuses these before the app sees them; the answer still has SIT's one shape."""
    long_line = b"GET /api/?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: sit\r\n\r\n"
    big_header = b"GET /api/ HTTP/1.1\r\nHost: sit\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n"
    with gunicorn(instance, workers=1) as server:
        answers = {
            414: raw_request(server.url, long_line),
            431: raw_request(server.url, big_header),
            400: raw_request(server.url, b"GARBAGE\r\n\r\n"),
        }
    details = {414: "Request Line is too large", 431: "headers", 400: "Invalid Request Line"}
    for status, answer in answers.items():
        head, body = answer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith(f"HTTP/1.1 {status} "), answer
        assert "Content-Type: application/problem+json" in lines
        assert f"Content-Length: {len(body)}" in lines
        problem = json.loads(body)
        assert problem["status"] == status and problem["title"] == HTTPStatus(status).phrase
        assert details[status] in problem["detail"], problem


def test_workers_share_the_secret_key_generated_at_first_start(instance: Path) -> None:
    """gunicorn.conf.py's config check creates the key in the master, before any worker forks."""
    cli_create_user(instance, "alice", SIT_SECRET_KEY="only-for-this-command")
    key = instance / "secret_key"
    assert not key.exists()
    with gunicorn(instance, workers=4, **PID_ACCESS_LOG) as server:
        url = server.url
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        as_alice = signed_in(url, "alice")

        def me(_: int) -> requests.Response:
            return requests.get(f"{url}/api/users/me/", headers=as_alice, timeout=30)

        responses = at_once(me, 20, threads=8)
        assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses]
        assert {r.json()["username"] for r in responses} == {"alice"}

    assert len(workers_that_answered(instance, "GET", "/api/users/me/", 200)) >= 2
    assert list(instance.glob(".secret_key*")) == []  # no draft left behind
    assert len(key.read_text().strip()) >= 32


def test_workers_load_nothing_only_the_command_line_uses(instance: Path) -> None:
    """A worker starts with what the master's config check imported, then imports `wsgi`:
    neither loads Flask-Migrate (alembic) nor swagger-ui-py's PyYAML (memory, see `create_app`
    and `sit.docs`)."""
    code = (
        "import runpy, sys\n"
        "runpy.run_path('gunicorn.conf.py')['on_starting'](None)\n"
        "import wsgi\n"
        "print(*sorted(sys.modules))"
    )
    result = subprocess.run(
        [str(BIN / "python"), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert {"sit", "apiflask", "apscheduler"} <= loaded
    assert not loaded & {"flask_migrate", "alembic", "swagger_ui", "yaml"}


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("SIT_DIGEST_INTERVAL", "soon", "DIGEST_INTERVAL"),
        ("SIT_NO_SUCH_KEY", "1", "NO_SUCH_KEY"),
        ("SIT_INSTANCE_PATH", "/dev/null/sit", "SIT_INSTANCE_PATH"),
    ],
)
def test_bad_configuration_stops_gunicorn_at_once(
    instance: Path, variable: str, value: str, key: str
) -> None:
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-w", "4"]
    command += ["-b", f"127.0.0.1:{free_port()}", "wsgi:app"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=os.environ | {variable: value},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"gunicorn still running 20 s after {variable}={value}:\n{output}")

    assert process.returncode != 0, output
    naming = [line for line in output.splitlines() if key in line]
    assert len(naming) == 1, output
    assert naming[0].startswith("sit: "), naming
    assert "Traceback" not in output
    assert "Booting worker" not in output
