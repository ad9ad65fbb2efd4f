"""`make bench`: measure SIT beside a bare WSGI app, a Django REST Framework peer and the seed's
own stack (that peer plus Celery on Redis), and write `bench/RESULTS.md` and `bench/results.png`.
Run from the project folder with SIT's virtualenv: `.venv/bin/python bench/run.py` (`--quick` for
a short smoke run, `--out DIR` elsewhere, `--only http` (or lateness, digest, scale) to run one
phase while working on it: that prints its figures and writes no report, but for scale, which
writes its own section of RESULTS.md; `--against REF` to run SIT as it was at git ref REF beside
the current one in the HTTP phase, each scenario's ratio and profile side by side, and in the
instructions phase, each request's instructions counted by callgrind: a change's cost that a
loaded machine cannot blur, `--only instructions --against REF` in about two minutes)."""

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import against
import instructions
import load
import peers
import report
import scale
import servers
import spy
from goals import SEED, goals, ratio_rows

BENCH = servers.BENCH
PACKAGES = (
    "Flask", "APIFlask", "pydantic", "SQLAlchemy", "Flask-SQLAlchemy", "APScheduler",
    "Flask-Mail", "gunicorn", "Django", "djangorestframework", "celery", "redis", "aiosmtpd",
    "py-spy",
)  # fmt: skip
SCENARIOS = ("get one", "list", "create", "patch")
SEED_SCENARIOS = ("create", "patch")  # its reads are the DRF peer's very code
FLOOR, FLOOR_APP = "floor", "--pythonpath bench floor:app"  # SIT with the least a write can do
FLOOR_SCENARIOS = ("create", "patch")
# The 500 newest issues demo1 created, which the patch scenario changes
SIT_ISSUES = ("SELECT i.id FROM issues i JOIN users u ON u.id = i.created_by_id "
              "WHERE u.username = 'demo1' ORDER BY i.id DESC LIMIT 500")  # fmt: skip
DRF_ISSUES = ("SELECT i.id FROM tracker_issue i JOIN auth_user u ON u.id = i.created_by_id "
              "WHERE u.username = 'demo1' ORDER BY i.id DESC LIMIT 500")  # fmt: skip


@dataclass(frozen=True)
class Settings:
    seconds: float  # each measured wrk run
    warmup: float  # one wrk run per server and scenario before the rounds
    rounds: int
    lateness_seconds: int
    lateness_rate: float
    lateness_delay: int
    digest_sizes: tuple[tuple[int, int], ...]  # (users, issues): the large one first
    scale_sizes: tuple[int, ...]  # issues: the smallest first


FULL = Settings(4, 1, 3, 60, 20, 5, ((10_000, 100_000), (2_500, 25_000)),
                (10_000, 100_000, 1_000_000))  # fmt: skip
QUICK = Settings(2, 1, 2, 10, 20, 3, ((1_000, 10_000), (250, 2_500)), (1_000, 10_000))


PAGE_SCENARIOS = ("get one", "list")  # what the pages are measured at, beside the API


@dataclass
class Target:
    name: str
    server: servers.Server
    auth: str  # the Authorization header line
    db: Path
    issues_sql: str  # ids of the issues demo1 created, newest first
    assignee: int
    scenarios: tuple[str, ...] = SCENARIOS
    peer: peers.Peer | None = None  # what stops it (with its Celery worker), for a peer
    pages: bool = False  # SIT's web pages (`/issues/`, `/issues/500`): list and get one only

    def stop(self) -> None:
        (self.peer or self.server).stop()


def scalars(db: Path, sql: str) -> list[Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute(sql)]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def start_sit(folder: Path, sink: servers.Sink, name: str, users: int, issues: int,
              root: Path = servers.ROOT, **extra: str):  # fmt: skip
    """A seeded SIT instance in `<folder>/<name>`, run from the checkout `root`."""
    instance = folder / name
    instance.mkdir()
    env = servers.sit_env(instance, sink.port, PYTHONPATH=str(root), **extra)
    servers.flask(env, "db", "upgrade", cwd=root)
    start = time.monotonic()
    servers.flask(env, "sit", "seed-demo", "--users", str(users), "--issues", str(issues), cwd=root)
    seconds = time.monotonic() - start
    return env, instance, seconds


def sit_target(
    name: str, folder: Path, sink: servers.Sink, root: Path = servers.ROOT, app: str = "wsgi:app"
) -> Target:
    """SIT from the checkout `root` (this one, or `--against`'s), seeded and served by gunicorn
    (or `bench/floor.py`'s app, which is SIT with the least a write can do)."""
    instance = "sit" if root == servers.ROOT else f"sit-{root.name}"
    instance = "floor" if app == FLOOR_APP else instance
    env, instance_path, _ = start_sit(folder, sink, instance, 100, 1000, root)
    token = servers.flask(env, "sit", "create-token", "demo1", cwd=root).strip()
    servers.add_page_reader(env, root)
    server = servers.gunicorn(instance, app, "gunicorn.conf.py", env, folder, cwd=root)
    db = instance_path / "sit.db"
    demo2 = scalars(db, "SELECT id FROM users WHERE username='demo2'")[0]
    scenarios = FLOOR_SCENARIOS if app == FLOOR_APP else SCENARIOS
    return Target(name, server, f"Authorization: Bearer {token}", db, SIT_ISSUES, demo2, scenarios)


def peer_target(name: str, peer: peers.Peer, scenarios: tuple[str, ...] = SCENARIOS) -> Target:
    demo2 = scalars(peer.db, "SELECT id FROM auth_user WHERE username='demo2'")[0]
    return Target(name, peer.server, f"Authorization: Token {peer.token}", peer.db, DRF_ISSUES,
                  demo2, scenarios, peer)  # fmt: skip


def start_targets(folder: Path, sink: servers.Sink, ref: tuple[str, Path] | None) -> list[Target]:
    """SIT (and SIT at `ref`, a name and its checkout), the DRF peer, the seed's stack and the
    bare app, each ready to answer; stopped again if one of them fails to start."""
    targets: list[Target] = []
    try:
        targets.append(sit_target("SIT", folder, sink))
        if ref:
            targets.append(sit_target(f"SIT@{ref[0]}", folder, sink, ref[1]))
        targets.append(sit_target(FLOOR, folder, sink, app=FLOOR_APP))
        targets.append(peer_target("DRF", peers.start_drf("drf", "drfpeer.settings", folder)))
        seed = peers.start_seed_stack("seed", folder, sink.port)
        targets.append(peer_target(SEED, seed, SEED_SCENARIOS))
        bare = servers.gunicorn("bare", "--pythonpath bench bare:app", "bench/gunicorn_peer.py",
                                servers.clean_env(), folder)  # fmt: skip
        targets.append(Target("bare", bare, "Authorization: Bearer x", Path(), "", 2))
        for target in targets:
            header, value = target.auth.split(": ", 1)
            servers.wait_ready(target.server, "/api/500/", {header: value})
        cookie = servers.session_cookie(targets[0].server)
        targets.append(Target("SIT pages", targets[0].server, cookie, Path(), "", 2,
                              PAGE_SCENARIOS, pages=True))  # fmt: skip
    except BaseException:
        for target in targets:
            target.stop()
        raise
    return targets


def run_once(target: Target, scenario: str, seconds: float) -> dict[str, float]:
    url, script, env = f"{target.server.url}/api/", None, None
    if target.pages:
        url = f"{target.server.url}/issues/" + ("500" if scenario == "get one" else "")
    elif scenario == "get one":
        url += "500/"
    elif scenario == "create":
        body = {"title": "Benchmark issue", "description": "Made by wrk", "assigned_to": 0}
        body["assigned_to"] = target.assignee
        script, env = "post.lua", os.environ | {"BENCH_BODY": json.dumps(body)}
    elif scenario == "patch":
        ids = scalars(target.db, target.issues_sql) if target.issues_sql else range(1, 501)
        script = "patch.lua"
        env = os.environ | {"BENCH_IDS": ",".join(map(str, ids)), "BENCH_PREFIX": "/api/"}
    return load.wrk(url, seconds, target.auth, script, env)


def worker_rss(server: servers.Server) -> list[float]:
    return [round(servers.rss_mib(pid), 1) for pid in server.workers()]


def http_phase(
    folder: Path, sink: servers.Sink, settings: Settings, ref: tuple[str, Path] | None = None
) -> dict[str, Any]:
    """Each scenario: one warm-up per server, then rounds in which the servers take turns; then
    a py-spy profile of one worker of each SIT (the current one, and `ref`'s)."""
    targets = start_targets(folder, sink, ref)
    sit = targets[0]
    out: dict[str, Any] = {"http": {}, "cpu_ms": [], "rss": {"cold": worker_rss(sit.server)}}
    try:
        for scenario in SCENARIOS:
            log(f"HTTP: {scenario}")
            taking = [target for target in targets if scenario in target.scenarios]
            runs: dict[str, list[dict[str, float]]] = {t.name: [] for t in taking}
            for target in taking:
                run_once(target, scenario, settings.warmup)
            if scenario == "get one":
                out["rss"]["before"] = worker_rss(sit.server)
            for _ in range(settings.rounds):
                for target in taking:
                    before = servers.cpu_seconds(target.server.pids())
                    result = run_once(target, scenario, settings.seconds)
                    cpu = servers.cpu_seconds(target.server.pids()) - before
                    result["cpu_ms_per_request"] = 1000 * cpu / max(result["requests"], 1)
                    runs[target.name].append(result)
            out["http"][scenario] = runs
        out["rss"]["after"] = worker_rss(sit.server)
        out["cpu_ms"] = [r["cpu_ms_per_request"] for r in out["http"]["get one"]["SIT"]]
        # the proof that each of the seed's creates scheduled its email
        seed = next(target.peer for target in targets if target.peer and target.peer.worker)
        out["seed_tasks"] = {"creates": seed.creates(), "scheduled": seed.scheduled()}
        sits = [t for t in targets if t.name.startswith("SIT") and not t.pages]  # not the pages
        # which schema each SIT runs: `--against`'s ref ran its own migrations
        out["migrations"] = {
            target.name: scalars(target.db, "SELECT version_num FROM alembic_version")[0]
            for target in sits
        }
        out["profiles"] = {
            scenario: {target.name: profile(target, scenario, folder, settings) for target in sits}
            for scenario in SCENARIOS
        }
    finally:
        for target in targets:
            target.stop()
    return out


def profile(target: Target, scenario: str, folder: Path, settings: Settings) -> dict[str, Any]:
    """py-spy's samples of one of the target's workers during an extra wrk run, summarized."""
    log(f"HTTP: profiling one {target.name} worker during a {scenario} run")
    raw = folder / f"profile-{target.server.name}-{scenario.replace(' ', '-')}.txt"
    idle = scenario in spy.WRITES
    sampler = spy.record(target.server.workers()[0], settings.seconds, raw, idle)
    run_once(target, scenario, settings.seconds + 1)
    sampler.wait(timeout=60)
    return spy.summarize(raw) | {"idle": idle} if raw.exists() else {}


def lateness_phase(folder: Path, sink: servers.Sink, settings: Settings) -> dict[str, Any]:
    return {"lateness": lateness(folder, sink, settings)}


def lateness(folder: Path, sink: servers.Sink, settings: Settings) -> dict[str, Any]:
    log(f"email: {settings.lateness_rate:g} creates/s for {settings.lateness_seconds} s")
    delay = str(settings.lateness_delay)
    env, instance, _ = start_sit(folder, sink, "lateness", 100, 0,
                                 SIT_ASSIGNMENT_EMAIL_DELAY=delay)  # fmt: skip
    token = servers.flask(env, "sit", "create-token", "demo1").strip()
    server = servers.gunicorn("sit-lateness", "wsgi:app", "gunicorn.conf.py", env, folder)
    db = instance / "sit.db"
    try:
        servers.wait_ready(server, "/healthz", {})
        assignees = scalars(db, "SELECT id FROM users WHERE username != 'demo1'")
        count = int(settings.lateness_rate * settings.lateness_seconds)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        bodies = load.create_bodies(count, assignees)
        result = load.paced_posts(server.url + "/api/", headers, bodies, settings.lateness_rate)
        pending = "SELECT count(*) FROM outbox WHERE kind = 'assignment' AND state = 'pending'"
        deadline = time.monotonic() + settings.lateness_delay + 60
        while scalars(db, pending)[0] and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        server.stop()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT due_at, sent_at FROM outbox WHERE kind = 'assignment'"
        ).fetchall()
    late = sorted(
        (datetime.fromisoformat(sent) - datetime.fromisoformat(due)).total_seconds()
        for due, sent in rows
        if sent
    )
    return result | {
        "rate": settings.lateness_rate,
        "seconds": settings.lateness_seconds,
        "delay": delay,
        "sent": len(late),
        "unsent": len(rows) - len(late),
        "p50_s": statistics.median(late) if late else None,
        "p99_s": late[int(0.99 * (len(late) - 1))] if late else None,
        "max_s": late[-1] if late else None,
    }


def measured(command: list[str], env: dict[str, str], out: Path, timeout: float) -> dict:
    """Run a command; its wall time, peak RSS (from wait4) and stdout."""
    start = time.monotonic()
    with out.open("w") as stdout:
        process = subprocess.Popen(command, cwd=servers.ROOT, env=env, stdout=stdout,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": time.monotonic() - start,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "exit": process.returncode,
        "output": out.read_text(),
    }


def digest_phase(folder: Path, sink: servers.Sink, settings: Settings) -> dict[str, Any]:
    runs, raw = [], {}
    for users, issues in settings.digest_sizes:
        log(f"email: digest over {users:,} users and {issues:,} issues")
        env, instance, seed_s = start_sit(folder, sink, f"digest-{users}", users, issues)
        mark = sink.mark()
        flask = [str(servers.BIN / "flask"), "sit", "send-digest"]
        run = measured(flask, env, folder / f"digest-{users}.out", timeout=300)
        messages = sink.since(mark)
        sent = len(messages)
        runs.append({"users": users, "issues": issues, "seed_s": seed_s, "sent": sent,
                     "users_per_s": sent / run["wall_s"] if run["exit"] == 0 else None,
                     "wall_s": run["wall_s"], "peak_rss_mib": run["peak_rss_mib"],
                     "exit": run["exit"], "output": run["output"][-500:]})  # fmt: skip
        if not raw and messages:
            log("email: raw smtplib over one connection, the same sizes")
            sizes = folder / "sizes.txt"
            sizes.write_text("".join(f"{size}\n" for _, size, _ in messages))
            command = [sys.executable, str(BENCH / "rawsmtp.py"), str(sink.port), str(sizes)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            raw = json.loads(done.stdout)
            raw["per_s"] = raw["messages"] / raw["seconds"]
            raw["mean_size"] = statistics.mean(size for _, size, _ in messages)
        shutil.rmtree(instance)
    return {"digest": {"runs": runs, "raw": raw}}


def instructions_phase(
    folder: Path, sink: servers.Sink, settings: Settings, ref: tuple[str, Path] | None = None
) -> dict[str, Any]:
    """Instructions per request in each SIT (this one, and `ref`'s), counted by callgrind."""
    roots = {"SIT": servers.ROOT} | ({f"SIT@{ref[0]}": ref[1]} if ref else {})
    counts = {}
    for name, root in roots.items():
        log(f"instructions: {name}")
        instance = f"counted-{name.replace('@', '-')}"
        env, path, _ = start_sit(folder, sink, instance, 100, 1000, root)
        servers.add_page_reader(env, root)
        counts[name] = instructions.count(root, path, env, folder)
    return {"instructions": counts}


def scale_phase(folder: Path, sink: servers.Sink, settings: Settings) -> dict[str, Any]:
    return scale.phase(folder, sink, settings.scale_sizes, log)


PHASES = {
    "http": http_phase,
    "instructions": instructions_phase,
    "lateness": lateness_phase,
    "digest": digest_phase,
    "scale": scale_phase,
}


def partial_figures(data: dict[str, Any]) -> dict[str, Any]:
    """What one phase alone tells: its ratios, or its raw figures."""
    if "http" in data:
        data["medians"] = medians(data["http"])
        data["ratios"] = ratio_rows(data["http"])
        del data["http"]
    return data


def medians(http: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    return {
        scenario: {
            target: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
            for target, runs in by_target.items()
        }
        for scenario, by_target in http.items()
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine())  # fmt: skip
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "kernel": f"{platform.system()} {platform.release()}",
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "versions": versions,
        "wrk": (wrk.stdout or wrk.stderr).split("\n")[0].split(" [")[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", type=Path, default=BENCH, help="where RESULTS.md goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--only", choices=PHASES, action="append", help="run only this phase")
    parser.add_argument("--against", metavar="REF", help="SIT at this git ref, beside this one")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    load.ensure("wrk")
    load.ensure("valgrind")
    began = time.monotonic()
    data: dict[str, Any] = {"machine": machine(), "settings": settings.__dict__}
    folder = Path(tempfile.mkdtemp(prefix="sit-bench-"))
    log(f"working in {folder}")
    sink = servers.Sink(folder)
    checkout = None
    try:
        if args.against:
            checkout = against.check_out(args.against, folder)
        ref = checkout and (args.against, checkout)
        phases = PHASES | {
            "http": partial(http_phase, ref=ref),
            "instructions": partial(instructions_phase, ref=ref),
        }
        for phase in args.only or PHASES:
            data |= phases[phase](folder, sink, settings)
    finally:
        sink.stop()
        if checkout:
            against.remove(checkout)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    command = "python bench/run.py" + " --quick" * args.quick
    command += f" --against {args.against}" * bool(args.against)
    data["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.only:
        profiles = data.pop("profiles", {})
        print(json.dumps(partial_figures(data), indent=1, default=str))
        print("\n".join(report.profile_sections(profiles)))
        if "instructions" in data:
            print("\n".join(report.instruction_rows(data["instructions"])))
        if "scale" in data:  # its own section of RESULTS.md, the others kept
            data["command"] = command + " --only scale"
            args.out.mkdir(parents=True, exist_ok=True)
            report.write_scale(data, args.out / "RESULTS.md")
            report.draw_scale(data["scale"], args.out / "scale.png")
        return
    data["medians"] = medians(data["http"])
    data["goals"] = goals(data)
    data["duration_s"] = time.monotonic() - began
    data["command"] = "make bench" if command == "python bench/run.py" else command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    report.write(data, args.out / "RESULTS.md")
    report.draw(data, args.out / "results.png")
    report.draw_scale(data["scale"], args.out / "scale.png")
    log(f"wrote {args.out / 'RESULTS.md'} in {data['duration_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
