"""Issues 6 and 20's figures: each measured value beside its goal (and moonshot), met or
missed."""

import statistics
from typing import Any

SEED = "seed's stack"
# (scenario, numerator, denominator, goal, moonshot): each a median of per-round ratios; issue
# 20's first, then what is left of issue 6's; None: no goal
RATIOS = (
    ("create", "SIT", SEED, 1.5, 2.0),
    ("create", "SIT", "DRF", 1.0, 1.5),
    ("patch", "SIT", "DRF", 2.0, None),
    ("list", "SIT", "DRF", 2.0, None),
    ("get one", "SIT", "DRF", 2.0, None),
    ("get one", "SIT", "bare", 0.22, None),
    ("list", "SIT", "bare", 0.15, None),
    ("patch", "SIT", SEED, None, None),
    ("create", "floor", "DRF", None, None),  # the least a create can do on SIT's stack
    ("patch", "floor", "DRF", None, None),  # what the goal of 2.0 above would have to beat
    ("create", "SIT", "floor", None, None),
    ("patch", "SIT", "floor", None, None),
    ("create", "SIT", "bare", None, None),
    ("patch", "SIT", "bare", None, None),
    ("list", "SIT pages", "SIT", 0.7, None),  # the issues page beside the API's list
    ("get one", "SIT pages", "SIT", 0.7, None),  # an issue's page beside the API's get-one
)
RSS_GROWTH = 1.10
RSS_LIMIT_MIB = 60


def row(
    figure: str, measured: str, goal: str, met: bool | None, moonshot: str = "", shot: bool = False
) -> dict[str, Any]:
    return {"figure": figure, "measured": measured, "goal": goal, "met": met,
            "moonshot": moonshot, "moonshot_met": shot}  # fmt: skip


def ratio(http: dict[str, Any], scenario: str, a: str, b: str) -> float:
    pairs = zip(http[scenario][a], http[scenario][b], strict=True)
    return statistics.median(x["rps"] / y["rps"] for x, y in pairs)


def ratio_rows(http: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals' ratios, then this SIT against `--against`'s in each scenario (no goal)."""
    rows = []
    for scenario, a, b, goal, moonshot in RATIOS:
        if b not in http[scenario]:
            continue
        value = ratio(http, scenario, a, b)
        rows.append(
            row(
                f"{scenario}, req/s, {a} ÷ {b}",
                f"{value:.2f}",
                "—" if goal is None else f"≥ {goal}",
                None if goal is None else value >= goal,
                "" if moonshot is None else f"≥ {moonshot}",
                moonshot is not None and value >= moonshot,
            )
        )
    for scenario, by_target in http.items():
        for ref in (name for name in by_target if name.startswith("SIT@")):
            value = ratio(http, scenario, "SIT", ref)
            rows.append(row(f"{scenario}, req/s, SIT ÷ {ref}", f"{value:.2f}", "—", None))
    return rows


def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = ratio_rows(data["http"])
    cpu = statistics.median(data["cpu_ms"])
    rows.append(row("server CPU per GET one", f"{cpu:.2f} ms", "≤ 1.0 ms", cpu <= 1.0))
    p99 = data["lateness"]["p99_s"]
    late = data["lateness"]["unsent"] == 0 and p99 is not None and p99 <= 0.5
    shown = "not sent" if p99 is None else f"{p99:.3f} s"
    unsent = data["lateness"]["unsent"]
    shown += f" ({unsent} unsent)" if unsent else ""
    rate = data["lateness"]["rate"]
    rows.append(row(f"assignment email lateness p99 at {rate:g} creates/s", shown, "≤ 0.5 s", late))
    big, small = data["digest"]["runs"]
    raw = data["digest"]["raw"]
    if big["users_per_s"] and raw:
        speed = big["users_per_s"] / raw["per_s"]
        rows.append(
            row(
                f"digest {big['users']:,}/{big['issues']:,}: users/s ÷ raw smtplib msgs/s",
                f"{speed:.2f} ({big['users_per_s']:.0f} ÷ {raw['per_s']:.0f})",
                "≥ 0.5",
                speed >= 0.5,
            )
        )
    else:
        rows.append(row("digest users/s ÷ raw smtplib", "did not finish", "≥ 0.5", False))
    growth = big["peak_rss_mib"] / small["peak_rss_mib"]
    rows.append(
        row(
            f"digest peak RSS, {big['users']:,} vs {small['users']:,} users",
            f"{big['peak_rss_mib']:.0f} vs {small['peak_rss_mib']:.0f} MiB ({growth - 1:+.0%})",
            "within +10 %",
            growth <= RSS_GROWTH,
        )
    )
    before, after = sum(data["rss"]["before"]), sum(data["rss"]["after"])
    worst = max(data["rss"]["after"])
    rows.append(
        row(
            "SIT worker RSS after the HTTP benchmark vs before",
            f"{after / before - 1:+.0%} (total {before:.0f} → {after:.0f} MiB), "
            f"largest worker {worst:.0f} MiB",
            f"within +10 %, ≤ {RSS_LIMIT_MIB} MiB",
            after / before <= RSS_GROWTH and worst <= RSS_LIMIT_MIB,
        )
    )
    return rows
