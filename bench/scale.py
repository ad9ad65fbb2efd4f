"""The scale phase: each listing of issues 15 and 21 at 10,000, 100,000 and 1,000,000 issues
(10,000 users; labels on issues, ten comments and ten events on each of a thousand), on SQLite
and on PostgreSQL, served by one gunicorn worker; the median of 9 sequential requests after one
warm-up, as a new user would try it after `flask sit seed-demo`."""

import json
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import servers
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1/postgres"  # trust auth; bench databases
USERS = 10_000
REQUESTS = 9
ABSENT = "zebra"  # not a word of seed-demo's vocabulary, nor the start of one
QUERIES = {
    "/api/ (page 1)": "/api/",
    "?q=crash (a common word)": "/api/?q=crash",
    "?q=crash login": "/api/?q=crash+login",
    f"?q={ABSENT} (a word no issue has)": f"/api/?q={ABSENT}",
    "?status=C&sort=updated": "/api/?status=C&sort=updated",
    "?assigned_to=5&sort=updated&direction=asc": "/api/?assigned_to=5&sort=updated&direction=asc",
    "?created_by=demo7": "/api/?created_by=demo7",
    "the next link of the page at 90 % depth": None,  # found at run time
    "GET /api/<id>/": None,
}
# Listings the issue's table leaves out, measured the same way: searches with a filter (a dense
# one, twice, and a sparse one), and one letter, the start of many words.
MORE = {
    "?q=crash&status=C": "/api/?q=crash&status=C",
    "?q=crash login&status=C": "/api/?q=crash+login&status=C",
    "?q=crash&assigned_to=5": "/api/?q=crash&assigned_to=5",
    "?q=a (one letter)": "/api/?q=a",
}
# Issue 21's: `?label=` with each sort, alone and with a search (seed-demo's labels: "bug" on a
# third of the issues, "wontfix" on one in 36, none on a third), and an issue's comments and
# history, a page of 5 of its 10 and the page its `next` link gives.
CONVERSATION = {
    "?label=bug": "/api/?label=bug",
    "?label=bug&sort=updated": "/api/?label=bug&sort=updated",
    "?label=bug&sort=id&direction=asc": "/api/?label=bug&sort=id&direction=asc",
    "?label=wontfix (one in 36)": "/api/?label=wontfix",
    "?label=none": "/api/?label=none",
    "?label=bug&label=ui": "/api/?label=bug&label=ui",
    "?label=bug&q=crash": "/api/?label=bug&q=crash",
    "?label=bug&q=crash&sort=updated": "/api/?label=bug&q=crash&sort=updated",
    "?label=wontfix&q=crash": "/api/?label=wontfix&q=crash",
    "?label=none&q=crash": "/api/?label=none&q=crash",
    "comments of an issue (5 of 10)": None,  # found at run time, as the next three
    "comments, the next link": None,
    "events of an issue (5 of 10)": None,
    "events, the next link": None,
}
GOAL_RATIO, GOAL_MS = 2.0, 5.0  # at most twice the smallest size's time, or 5 ms more


def get(url: str, token: str) -> tuple[float, bytes, dict[str, str]]:
    """One request's wall time in ms, its body and headers; it must answer 200."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
        elapsed = (time.perf_counter() - start) * 1000
        return elapsed, body, dict(response.headers)


def median_ms(url: str, token: str) -> float:
    get(url, token)  # warm-up
    return statistics.median(get(url, token)[0] for _ in range(REQUESTS))


def next_link(headers: dict[str, str]) -> str:
    for part in headers["Link"].split(", "):
        url, rel = part.split("; ")
        if rel == 'rel="next"':
            return url[1:-1]
    raise RuntimeError(f"no next link in {headers['Link']}")


def measure(base: str, token: str, issues: int) -> dict[str, float]:
    """Each query's median time in ms, against a server on `base`."""
    paths = QUERIES | MORE | CONVERSATION
    deep = max(int(0.9 * issues / 30), 1)
    deep_page = get(f"{base}/api/?page={deep}", token)[2]
    paths["the next link of the page at 90 % depth"] = local(next_link(deep_page))
    paths["GET /api/<id>/"] = f"/api/{issues // 2}/"
    # The issue updated last is one with comments: seed-demo's come an hour after the issue.
    (latest,) = json.loads(get(f"{base}/api/?sort=updated&per_page=1", token)[1])
    if latest["comments"] != 10:
        raise RuntimeError(f"the issue updated last has no seeded comments: {latest}")
    for kind in ("comments", "events"):
        first = f"/api/{latest['id']}/{kind}/?per_page=5"
        paths[f"{kind} of an issue (5 of 10)"] = first
        paths[f"{kind}, the next link"] = local(next_link(get(base + first, token)[2]))
    return {name: median_ms(base + path, token) for name, path in paths.items()}


def local(url: str) -> str:
    """The path and query of a link (under PUBLIC_URL), to ask the server on its own port."""
    link = urlsplit(url)
    return f"{link.path}?{link.query}"


def database(kind: str, issues: int) -> tuple[dict[str, str], Any]:
    """SIT_* settings naming a new database of this kind, and how to drop it afterwards."""
    if kind == "sqlite":
        return {}, lambda: None
    name = f"sit_bench_scale_{issues}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    url = sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    return {"SIT_SQLALCHEMY_DATABASE_URI": url}, drop


def checkpoint(kind: str) -> None:
    """PostgreSQL: write the seed's pages to disk now rather than while the listings are timed."""
    if kind == "postgresql":
        admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as connection:
            connection.exec_driver_sql("CHECKPOINT")


def one_size(folder: Path, sink: servers.Sink, kind: str, issues: int) -> dict[str, Any]:
    instance = folder / f"scale-{kind}-{issues}"
    instance.mkdir()
    settings, drop = database(kind, issues)
    env = servers.sit_env(instance, sink.port, **settings)
    try:
        servers.flask(env, "db", "upgrade")
        start = time.monotonic()
        servers.flask(env, "sit", "seed-demo", "--users", str(USERS), "--issues", str(issues),
                      timeout=3600)  # fmt: skip
        seed_s = time.monotonic() - start
        checkpoint(kind)
        token = servers.flask(env, "sit", "create-token", "demo1").strip()
        server = servers.gunicorn(f"scale-{kind}-{issues}", "wsgi:app", "gunicorn.conf.py", env,
                                  folder, workers=1)  # fmt: skip
        try:
            servers.wait_ready(server, "/healthz", {})
            return {"seed_s": seed_s, "ms": measure(server.url, token, issues)}
        finally:
            server.stop()
    finally:
        drop()


def phase(folder: Path, sink: servers.Sink, sizes: tuple[int, ...], log: Any) -> dict[str, Any]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    out: dict[str, Any] = {"sizes": list(sizes), "users": USERS, "requests": REQUESTS, "load": load}
    for kind in ("sqlite", "postgresql"):
        out[kind] = {}
        for issues in sizes:
            log(f"scale: {kind}, {issues:,} issues")
            out[kind][str(issues)] = one_size(folder, sink, kind, issues)
            log(f"scale: {json.dumps(out[kind][str(issues)])}")
    return {"scale": out}


def verdicts(
    scale: dict[str, Any], kind: str, queries: dict[str, str | None]
) -> list[tuple[str, float, float, bool]]:
    """Per query: largest ÷ smallest size's time, the difference in ms, and the goal met."""
    small, large = (scale[kind][str(n)]["ms"] for n in (scale["sizes"][0], scale["sizes"][-1]))
    rows = []
    for name in queries:
        ratio, more = large[name] / small[name], large[name] - small[name]
        rows.append((name, ratio, more, ratio <= GOAL_RATIO or more <= GOAL_MS))
    return rows
