"""`bench/RESULTS.md` and `bench/results.png` from one run's figures."""

from pathlib import Path
from typing import Any

import instructions
import matplotlib
import scale

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

COLORS = {"SIT": "#2b6cb0", "DRF": "#c05621", "seed's stack": "#9c4221", "bare": "#718096",
          "floor": "#2c7a7b"}  # fmt: skip
REF_COLOR = "#90cdf4"  # SIT at `--against`'s ref


def fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def goal_rows(goals: list[dict[str, Any]]) -> list[str]:
    rows = ["| figure | measured | goal | moonshot | |", "|---|---|---|---|---|"]
    for goal in goals:
        verdict = "—" if goal["met"] is None else ("met" if goal["met"] else "**missed**")
        if goal["moonshot_met"]:
            verdict = "moonshot met"
        rows.append(
            f"| {goal['figure']} | {goal['measured']} | {goal['goal']} | {goal['moonshot']} "
            f"| {verdict} |"
        )
    return rows


def http_rows(http: dict[str, dict[str, list[dict[str, float]]]], medians: Any) -> list[str]:
    rows = [
        "| scenario | server | req/s (median) | p50 ms | p99 ms | errors | req/s each round |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario, by_target in http.items():
        for target, runs in by_target.items():
            m = medians[scenario][target]
            rounds = ", ".join(f"{run['rps']:,.0f}" for run in runs)
            errors = sum(run["errors"] for run in runs)
            rows.append(
                f"| {scenario} | {target} | {m['rps']:,.0f} | {fmt(m['p50_ms'], 1)} | "
                f"{fmt(m['p99_ms'], 1)} | {errors} | {rounds} |"
            )
    return rows


def profile_rows(scenario: str, profiles: dict[str, dict[str, Any]]) -> list[str]:
    """One column per profiled SIT (this one, and `--against`'s ref beside it)."""
    taken = {name: profile for name, profile in profiles.items() if profile.get("samples")}
    if not taken:
        return ["No samples were taken (py-spy could not attach)."]
    names = list(taken)
    counts = "; ".join(
        f"{name}: {p['samples']} samples inside request handling, {p['in_app']:.0%} of them "
        "inside the Flask app" for name, p in taken.items()
    )  # fmt: skip
    idle = any(p.get("idle") for p in taken.values())
    waits = ("every sample, a wait for SQLite's write lock or the network included (`--idle`)"
             if idle else "samples of running code: a wait on a lock or the network is not "
             "counted")  # fmt: skip
    lines = [
        f"py-spy (200 Hz; {waits}) of one of each SIT's four workers during an extra {scenario} "
        "wrk run "
        f"({counts}; the rest in gunicorn: reading the request, writing and closing the "
        "socket, the access log; on a loaded 2-core machine that includes waiting for a CPU).",
        "",
    ]
    lines += share_table(f"inside the app, phase of a {scenario} request", "phases", taken)
    lines += ["", *share_table("all request samples, by kind of code (innermost)", "layers", taken)]
    for name in names:
        lines += ["", f"Hottest functions (self time), {name}:", ""]
        lines += [f"- `{frame}` {share:.1%}" for frame, share in taken[name]["hottest"]]
    return lines


def share_table(title: str, key: str, profiles: dict[str, dict[str, Any]]) -> list[str]:
    """Each row's share in each profile, the rows in the first profile's order."""
    rows = list(dict.fromkeys(row for p in profiles.values() for row in p[key]))
    lines = [f"| {title} | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    for row in rows:
        shares = " | ".join(f"{p[key].get(row, 0):.0%}" for p in profiles.values())
        lines.append(f"| {row} | {shares} |")
    return lines


def profile_sections(profiles: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for scenario, by_target in profiles.items():
        lines += [f"## Where a {scenario} request's time goes", ""]
        lines += [*profile_rows(scenario, by_target), ""]
    return lines


def seed_tasks_line(tasks: dict[str, int]) -> str:
    return (
        f"At the end of the HTTP phase its {tasks['creates']:,} creates had left "
        f"{tasks['scheduled']:,} tasks waiting in Redis for their countdown."
    )


def instruction_rows(counts: dict[str, dict[str, int]]) -> list[str]:
    """Each SIT's instructions per request, and the first SIT's ÷ each other's (below 1: the
    first costs less)."""
    names = list(counts)
    ratios = [f"{names[0]} ÷ {name}" for name in names[1:]]
    lines = [
        "**Instructions per request inside the app** (`bench/instructions.py`: valgrind's "
        "callgrind, 100 requests after 20 of warm-up, Flask's test client, scheduler off; the "
        "same count whatever the machine's load):",
        "",
        "| scenario | " + " | ".join([*names, *ratios]) + " |",
        "|---" * (1 + len(names) + len(ratios)) + "|",
    ]
    for scenario in instructions.SCENARIOS:
        figures = [counts[name].get(scenario) for name in names]
        if None in figures:
            continue  # a SIT without that scenario (the pages, before issue 23)
        shares = [fmt(figures[0] / figure) for figure in figures[1:]]
        cells = [f"{figure / 1e6:.2f} M" for figure in figures]
        lines.append(f"| {scenario} | " + " | ".join([*cells, *shares]) + " |")
    return lines


def write(data: dict[str, Any], path: Path) -> None:
    machine, late, digest = data["machine"], data["lateness"], data["digest"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    lines = [
        "# SIT benchmark results",
        "",
        f"Written by `{data['command']}` on {data['date']}; the whole run took "
        f"{data['duration_s'] / 60:.1f} min.",
        "",
        "## Machine",
        "",
        f"- {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']:.1f} GiB memory, "
        f"{machine['kernel']}",
        f"- load average when the run started: {machine['load']}",
        f"- Python {machine['python']}; {versions}; {machine['wrk']}",
        "",
        "## Goals (issues 20 and 6)",
        "",
        *goal_rows(data["goals"]),
        "",
        "Each ratio is the median of per-round ratios; within a round the servers take turns "
        f"({', '.join(data['http']['create'])}, then again), all of them running at the same "
        "time. A `SIT@REF` is SIT as it was at that git ref (`--against REF`), run from a "
        "temporary worktree with the same virtualenv; each SIT's database is at migration "
        + ", ".join(f"{rev} ({name})" for name, rev in data["migrations"].items())
        + ".",
        "",
        "## HTTP",
        "",
        f"wrk `-t2 -c32`, {data['settings']['seconds']:g} s per run after one "
        f"{data['settings']['warmup']:g} s warm-up per server and scenario, "
        f"{data['settings']['rounds']} rounds; every server is gunicorn with SIT's "
        "`gunicorn.conf.py` settings and 4 sync workers on loopback. SIT, DRF and the seed's "
        "stack each have their own SQLite database seeded with 100 users and 1,000 issues.",
        "",
        *http_rows(data["http"], data["medians"]),
        "",
        "- **get one**: `GET /api/500/`. **list**: `GET /api/` (the default page: 30 newest). "
        "**create**: `POST /api/` with a title, a description and an assignee (SIT stores its "
        "assignment email and schedules its job; DRF schedules nothing; the seed's stack "
        "schedules a Celery task). **patch**: `PATCH /api/<id>/` of a new title and status, as "
        "the creator, over 500 issues it created.",
        "- **bare**: `bench/bare.py`, a WSGI function answering fixed JSON documents (no "
        "framework, auth or database). **DRF**: `bench/drf/`, Django 5.2 and DRF with "
        "`TokenAuthentication`, a `ModelViewSet` with `select_related`, the JSON renderer only, "
        "`PageNumberPagination` of 30, and SQLite tuned as SIT tunes it (WAL, "
        "`synchronous=NORMAL`, `BEGIN IMMEDIATE`, 30 s busy timeout) with persistent "
        "connections. **seed's stack**: the system SIT replaces, as its README describes it: "
        "the same DRF peer (`bench/drf/seedstack/`), each create (or change of assignee) then "
        "calling `send_assignment_email.apply_async(countdown=720)` on Celery with Redis "
        "(127.0.0.1:6379), and one `celery -A seedstack worker -l INFO` (prefork, a process "
        "per core) reserving those tasks until their countdown ends; measured in the writes "
        "only, its reads being the DRF peer's. "
        f"{seed_tasks_line(data['seed_tasks'])} **floor**: `bench/floor.py`, SIT itself (its "
        "own instance) whose create and patch are the least those writes can do on SIT's stack "
        "(token check, input and answer schemas, the SPEC's statements by prebuilt Core "
        "statements, one commit), leaving out labels, webhooks, `If-Match` and the retry: a "
        "ceiling for SIT's own writes, measured in create and patch.",
        f"- SIT worker memory (RSS, MiB): after boot {data['rss']['cold']}, before the "
        f"benchmark (after the warm-up) {data['rss']['before']}, after it "
        f"{data['rss']['after']}.",
        f"- SIT server CPU per GET one (master + workers, utime + stime from /proc): "
        f"{', '.join(f'{x:.3f}' for x in data['cpu_ms'])} ms per request in each round.",
        "",
        *instruction_rows(data["instructions"]),
        "",
        "## Email",
        "",
        f"**Assignment email lateness** (`sent_at` minus `due_at` from SIT's outbox): "
        f"{late['requests']} creates at {late['rate']:g}/s for {late['seconds']:g} s "
        f"(open loop, achieved {late['rps']:.1f}/s, create p50 {late['p50_ms']:.0f} ms, p99 "
        f"{late['p99_ms']:.0f} ms, {late['errors']} errors), 4 workers, "
        f"`SIT_ASSIGNMENT_EMAIL_DELAY={late['delay']}`: {late['sent']} sent, "
        f"{late['unsent']} not sent; lateness p50 {fmt(late['p50_s'], 3)} s, p99 "
        f"{fmt(late['p99_s'], 3)} s, max {fmt(late['max_s'], 3)} s.",
        "",
        "**Digest** (`flask sit send-digest` to the same aiosmtpd sink, no server running):",
        "",
        "| users / issues | seed s | digests sent | wall s | users/s | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for run in digest["runs"]:
        lines.append(
            f"| {run['users']:,} / {run['issues']:,} | {run['seed_s']:.1f} | {run['sent']:,} | "
            f"{run['wall_s']:.1f} | {fmt(run['users_per_s'], 0)} | {run['peak_rss_mib']:.0f} |"
        )
    raw = digest["raw"]
    lines += [
        "",
        f"Raw `smtplib` over one connection, {raw['messages']:,} pre-built messages of the same "
        f"sizes (mean {raw['mean_size']:,.0f} bytes): {raw['seconds']:.1f} s, "
        f"{raw['per_s']:,.0f} messages/s.",
        "",
        *profile_sections(data["profiles"]),
        "![req/s and p99 per scenario](results.png)",
        "",
        *scale_section(data),
    ]
    path.write_text("\n".join(lines))


SCALE_BEGIN, SCALE_END = "<!-- scale phase -->", "<!-- end of the scale phase -->"
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def scale_section(data: dict[str, Any]) -> list[str]:
    """The scale phase's tables, between markers that `write_scale` finds again."""
    figures = data["scale"]
    sizes = figures["sizes"]
    lines = [
        SCALE_BEGIN,
        "## At scale (issues 15 and 21)",
        "",
        f"Written by `{data['command']}` on {data['date']}. Each listing of issue 15 on a "
        f"database that `flask sit seed-demo --users {figures['users']:,}` filled with each "
        "number of issues, served by one gunicorn worker (SIT's `gunicorn.conf.py`, `-w 1`); "
        f"the median of {figures['requests']} sequential requests after one warm-up, in ms, "
        "measured from the client (urllib on loopback). PostgreSQL runs on the same machine. "
        f"Goal: at {sizes[-1]:,} issues at most {scale.GOAL_RATIO:g} times the time at "
        f"{sizes[0]:,}, or at most {scale.GOAL_MS:g} ms more. Load average when it started: "
        f"{figures.get('load', 'not recorded')}.",
        "",
    ]
    for kind, title in DATABASES.items():
        rows = scale.verdicts(figures, kind, scale.QUERIES)
        worst = max(rows, key=lambda row: (not row[3], row[1]))
        lines += [
            f"**{title}** (worst ratio {worst[1]:.2f}, {worst[0]}; "
            f"{sum(row[3] for row in rows)} of {len(rows)} meet the goal)",
            "",
            *scale_table(figures, kind, rows),
        ]
        lines += [
            "",
            f"Beyond the issue's list, on {title}:",
            "",
            *scale_table(figures, kind, scale.verdicts(figures, kind, scale.MORE)),
            "",
            f"The conversation's listings (issue 21), on {title}:",
            "",
            *scale_table(figures, kind, scale.verdicts(figures, kind, scale.CONVERSATION)),
        ]
        seeds = ", ".join(f"{n:,}: {figures[kind][str(n)]['seed_s']:.0f} s" for n in sizes)
        lines += ["", f"`seed-demo` wall time on {title}: {seeds}.", ""]
    lines += ["![latency against size, log scale](scale.png)", "", SCALE_END, ""]
    return lines


def scale_table(
    figures: dict[str, Any], kind: str, rows: list[tuple[str, float, float, bool]]
) -> list[str]:
    sizes = figures["sizes"]
    header = " | ".join(f"{n:,}" for n in sizes)
    lines = [
        f"| query | {header} | ratio | + ms | goal |",
        "|---|" + "---|" * len(sizes) + "---|---|---|",
    ]
    for name, ratio, more, met in rows:
        cells = " | ".join(fmt(figures[kind][str(n)]["ms"][name], 1) for n in sizes)
        verdict = "met" if met else "**missed**"
        lines.append(f"| {name} | {cells} | {ratio:.2f} | {more:+.1f} | {verdict} |")
    return lines


def write_scale(data: dict[str, Any], path: Path) -> None:
    """Put the scale phase's section into RESULTS.md in place of the last one, the rest kept."""
    text = path.read_text() if path.exists() else "# SIT benchmark results\n\n"
    section = "\n".join(scale_section(data))
    if SCALE_BEGIN in text:
        before, rest = text.split(SCALE_BEGIN, 1)
        text = before + section + rest.split(SCALE_END, 1)[1].removeprefix("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def draw_scale(figures: dict[str, Any], path: Path) -> None:
    """One panel per database: each query's median time against the number of issues."""
    sizes = figures["sizes"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    for panel, (kind, title) in zip(axes, DATABASES.items(), strict=True):
        for name in scale.QUERIES:
            times = [figures[kind][str(n)]["ms"][name] for n in sizes]
            panel.plot(sizes, times, marker="o", label=name)
        panel.set_xscale("log")
        panel.set_yscale("log")
        panel.set_title(title)
        panel.set_xlabel("issues")
        panel.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("median latency (ms), one worker")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize="small")
    figure.suptitle("SIT listings against the number of issues")
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw(data: dict[str, Any], path: Path) -> None:
    """Two panels: req/s and p99 per scenario, SIT beside its peers."""
    scenarios = list(data["medians"])
    targets = list(data["medians"]["create"])  # every server takes part in create
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(targets)
    for panel, (key, label) in zip(
        axes, (("rps", "requests/s"), ("p99_ms", "p99 latency (ms)")), strict=True
    ):
        for n, target in enumerate(targets):
            values = [data["medians"][s].get(target, {}).get(key, 0) for s in scenarios]
            xs = [i + (n - (len(targets) - 1) / 2) * width for i in range(len(scenarios))]
            panel.bar(xs, values, width, label=target, color=COLORS.get(target, REF_COLOR))
        panel.set_xticks(range(len(scenarios)), scenarios)
        panel.set_ylabel(label)
        panel.set_yscale("log")
        panel.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(targets))
    figure.suptitle("SIT beside its peers (gunicorn, 4 sync workers each, wrk -t2 -c32)")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)
