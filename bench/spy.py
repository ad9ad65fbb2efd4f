"""Where a worker's time goes: py-spy samples of one gunicorn worker, summed by phase of the
request and by the layer the sampled code belongs to. A write's samples include the time its
worker waits (`--idle`): for SQLite's write lock, above all."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

BIN = Path(sys.executable).parent
IN_REQUEST = "SyncWorker.handle ("  # a sample of request handling
IN_APP = "wsgi_app ("  # inside the Flask app (the rest is gunicorn)

WRITES = ("create", "patch")  # the scenarios sampled with --idle
# By phase: the first of these, in this order, found anywhere on the stack owns the sample. A
# write's phases are named by the libraries' own functions where they can be, so that they mean
# the same in SIT before and after a change of its own functions (`--against`).
PHASES = (
    ("auth: token check and caller lookup", ("caller_for_token (", "verify_token (")),
    ("email's job: APScheduler's, pickled and written", ("add_job (", "schedule_email (")),
    ("write lock: BEGIN IMMEDIATE, waiting included", ("begin_write (",)),
    ("commit (and the flush it makes)", ("Session.commit (", "Connection.commit (")),
    ("flush: the INSERT or UPDATE", ("Session.flush (",)),
    ("issue lookup: get_or_404", ("get_or_404 (",)),
    ("page: count and rows", ("paginate (",)),
)
# Otherwise by what kind of code runs: the innermost frame of one of these owns the sample.
LAYERS = (
    ("database: SQLAlchemy and sqlite3", ("sqlalchemy/", "sqlite3/", "flask_sqlalchemy/")),
    ("serialization: pydantic and JSON", ("pydantic", "json/", "sit/schemas.py")),
    ("token signature: itsdangerous", ("itsdangerous/", "hmac.py", "hashlib", "base64.py")),
    ("SIT's own code", ("sit/",)),
    ("framework: Flask, Werkzeug, APIFlask", ("flask/", "werkzeug/", "apiflask/", "flask_")),
    ("gunicorn: HTTP parsing, socket I/O, access log", ("gunicorn/", "logging/")),
)


def record(pid: int, seconds: float, out: Path, idle: bool = False) -> subprocess.Popen[bytes]:
    """Start sampling `pid` (200 Hz) into `out` (py-spy's raw collapsed stacks), with the samples
    of a thread that waits if `idle`."""
    command = [str(BIN / "py-spy"), "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "200"]
    command += ["-f", "raw", "-o", str(out), *["--idle"] * idle]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def owner(frames: list[str], table: tuple[tuple[str, tuple[str, ...]], ...]) -> str | None:
    for frame in reversed(frames):
        for name, marks in table:
            if any(mark in frame for mark in marks):
                return name
    return None


def summarize(raw: Path) -> dict[str, object]:
    """Shares of request-handling samples: inside the Flask app by phase, all of them by layer,
    and the hottest functions."""
    phases: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    requests = in_app = other = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count, frames = int(count_text), stack.split(";")
        if not any(IN_REQUEST in frame for frame in frames):
            other += count
            continue
        requests += count
        layer = owner(frames, LAYERS) or "other"
        layers[layer] += count
        leaves[frames[-1]] += count
        if any(IN_APP in frame for frame in frames):
            in_app += count
            phase = next(
                (name for name, marks in PHASES if any(m in f for f in frames for m in marks)),
                f"rest of the app: {layer}",
            )
            phases[phase] += count
    if not requests:
        return {"samples": 0}
    return {
        "samples": requests,
        "in_app": in_app / requests,
        "other_thread_samples": other,
        "phases": {k: v / in_app for k, v in phases.most_common()} if in_app else {},
        "layers": {k: v / requests for k, v in layers.most_common()},
        "hottest": [(f, n / requests) for f, n in leaves.most_common(8)],
    }
