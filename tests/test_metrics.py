"""`/metrics`: what it counts, its token, and the three views of delivery under real gunicorn
(one server: 4 workers, an SMTP sink, then an SMTP outage and a killed worker)."""

import os
import runpy
import signal
import socket
import tempfile
from pathlib import Path

import pytest
import requests
from helpers import ROOT, bearer, flask_cli, gunicorn, wait_until
from prometheus_client.parser import text_string_to_metric_families

from sit import create_app
from sit.cli import create_user
from sit.mail.outbox import deliver_due

TOKEN = "metrics-secret"
CLOSE = {"Connection": "close"}  # a new connection per request, so any worker may take it
DURATION = "sit_http_request_duration_seconds_count"
SENT, FAILURES = "sit_emails_sent_total", "sit_email_send_failures_total"
LATENESS = "sit_email_lateness_seconds_count"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus's text format as {(sample name, labels): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def test_requests_are_timed_by_url_rule_never_by_path(client, as_alice):
    before = scrape(client)
    for pk in (1, 2, 3):
        client.get(f"/api/{pk}/", headers=as_alice)  # 404s, each matched by the same rule
    client.get("/no/such/path/4711")
    client.open("/api/", method="BREW")
    after = scrape(client)

    def added(**labels: str) -> float:
        return value(after, DURATION, **labels) - value(before, DURATION, **labels)

    assert added(method="GET", route="/api/<int:pk>/", status="404") == 3
    assert added(method="GET", route="<unmatched>", status="404") == 1
    assert added(method="other", route="<unmatched>", status="405") == 1
    routes = {dict(labels)["route"] for name, labels in after if name == DURATION}
    assert not any("4711" in route or "/api/1/" in route for route in routes), routes


def test_emails_sent_failed_and_the_outbox_are_counted(app, client, mail_to_sink, new_issue):
    app.config["ASSIGNMENT_EMAIL_DELAY"] = 0
    before = scrape(client)
    new_issue()
    assert deliver_due() == 1
    mail_to_sink.stop()
    new_issue()
    assert deliver_due() == 0
    after = scrape(client)
    assert value(after, SENT, kind="assignment") - value(before, SENT, kind="assignment") == 1
    assert (
        value(after, LATENESS, kind="assignment") - value(before, LATENESS, kind="assignment") == 1
    )
    assert (
        value(after, FAILURES, kind="assignment") - value(before, FAILURES, kind="assignment") == 1
    )
    assert value(after, "sit_outbox_emails", state="retrying") == 1
    assert value(after, "sit_outbox_emails", state="pending") == 1
    assert value(after, "sit_runner") == 0  # no runner in a test's process
    assert value(after, "sit_database_up") == 1


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        (f"Token {TOKEN}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Bearer {TOKEN}", 200),
    ],
)
def test_metrics_token_is_required_once_set(app, client, authorization, status):
    app.config["METRICS_TOKEN"] = TOKEN
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.get_data(as_text=True)


def test_metrics_need_no_token_when_none_is_set(client):
    assert client.get("/metrics").status_code == 200


def test_metrics_still_answer_when_the_database_does_not(app, tmp_path):
    unreachable = f"sqlite:///{tmp_path}/missing/dir/sit.db"
    broken = create_app({"SQLALCHEMY_DATABASE_URI": unreachable, "SECRET_KEY": "x"})
    metrics = scrape(broken.test_client())
    assert value(metrics, "sit_database_up") == 0
    assert not any(name in ("sit_runner", "sit_outbox_emails") for name, _ in metrics)


# the three views under gunicorn


def live_gauge_files(folder: Path, pid: int) -> list[Path]:
    """prometheus_client's files of one process's gauges counting live processes."""
    return list(folder.glob(f"gauge_live*_{pid}.db"))


def metrics_folder(pid: int) -> Path:
    """The multiprocess folder gunicorn made for its workers: where this worker's files are."""
    (file,) = Path(tempfile.gettempdir()).glob(f"sit-metrics-*/gauge_livesum_{pid}.db")
    return file.parent


def test_three_views_under_gunicorn_healthy_then_during_an_outage(app, instance: Path, smtp):
    user = create_user("alice", "alice@example.com", "pw")
    alice = bearer(user) | CLOSE
    env = {
        **smtp.env,
        "SIT_ASSIGNMENT_EMAIL_DELAY": "0s",
        "SIT_EMAIL_RETRY_DELAY": "1s",
        "SIT_METRICS_TOKEN": TOKEN,
        "GUNICORN_CMD_ARGS": "--access-logformat 'access %(p)s \"%(r)s\"'",
    }
    with gunicorn(instance, 4, **env) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"} | CLOSE

        def scrape_server() -> dict:
            response = requests.get(f"{server.url}/metrics", headers=auth, timeout=10)
            assert response.status_code == 200, response.text
            return samples(response.text)

        def healthz() -> dict:
            return requests.get(f"{server.url}/healthz", headers=CLOSE, timeout=10).json()

        # healthy: the runner is seen by every worker, as the heartbeat row says
        runner = server.runner()
        body = wait_until(lambda: (b := healthz())["delivery"]["runner"] and b, 15, "a runner")
        assert body["status"] == "ok", body
        assert body["delivery"]["runner"]["pid"] == runner
        assert body["delivery"]["runner"]["host"] == socket.gethostname()
        status = flask_cli(instance, "sit", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        folder = metrics_folder(runner)

        # requests spread over the workers, counted once each, whichever worker is scraped
        for _ in range(40):
            response = requests.get(f"{server.url}/api/users/me/", headers=alice, timeout=10)
            assert response.status_code == 200
        served = {
            line.split()[1]
            for line in server.log.read_text().splitlines()
            if line.startswith("access ") and "/api/users/me/" in line
        }
        assert len(served) >= 2, served
        labels = {"method": "GET", "route": "/api/users/me/", "status": "200"}
        assert value(scrape_server(), DURATION, **labels) == 40

        # an email delivered to the sink moves the counters of the runner's worker
        issue = {"title": "Printer on fire", "assigned_to": user.id}
        requests.post(f"{server.url}/api/", json=issue, headers=alice, timeout=10)
        wait_until(lambda: len(smtp.received) == 1, 15, "the assignment email")

        def counted(m: list) -> bool:  # the counter and the histogram move one after the other
            return value(m, SENT, kind="assignment") == value(m, LATENESS, kind="assignment") == 1

        metrics = wait_until(
            lambda: (m := scrape_server()) and counted(m) and m, 15, "the sent email to be counted"
        )
        assert value(metrics, "sit_runner") == 1
        # the SMTP server goes away: retrying, with the error, and degraded in all three views
        smtp.stop()
        requests.post(f"{server.url}/api/", json=issue, headers=alice, timeout=10)
        body = wait_until(lambda: (b := healthz())["delivery"]["retrying"] and b, 15, "a retry")
        assert body["status"] == "degraded"
        assert "Connection refused" in body["delivery"]["last_error"]
        status = flask_cli(instance, "sit", "status")
        assert status.returncode == 1, status.stdout + status.stderr
        assert "Connection refused" in status.stdout
        metrics = scrape_server()
        assert value(metrics, FAILURES, kind="assignment") >= 1
        assert value(metrics, "sit_outbox_emails", state="retrying") == 1

        # a worker dies: its live gauge's file goes with it, the other counts stay
        assert value(metrics, "sit_workers") == 4
        victim = next(pid for pid in server.workers() if pid != runner)
        assert live_gauge_files(folder, victim)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not live_gauge_files(folder, victim), 15, "the dead worker's file")
        wait_until(lambda: len(server.workers()) == 4, 15, "gunicorn to replace the worker")
        metrics = wait_until(
            lambda: (m := scrape_server()) and value(m, "sit_workers") == 4 and m, 15, "4 workers"
        )
        assert value(metrics, DURATION, **labels) == 40
        assert value(metrics, SENT, kind="assignment") == 1

        # the token is required
        assert requests.get(f"{server.url}/metrics", headers=CLOSE).status_code == 401
    assert not folder.exists()  # gunicorn removed the folder it made when it stopped


def test_gunicorn_empties_a_metrics_folder_the_operator_named(instance, tmp_path, monkeypatch):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_4711.db").write_bytes(b"a previous run's counts")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    settings["on_starting"](None)
    assert list(folder.iterdir()) == []
    settings["on_exit"](None)
    assert folder.exists()  # not the one gunicorn made: the operator's to keep
