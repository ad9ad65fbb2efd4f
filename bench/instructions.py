"""The instructions each request costs inside the app, counted by valgrind's callgrind: the same
count for the same code and data whatever else the machine does, so a change's cost (`--against
REF`) shows on a loaded machine, where req/s moves by a tenth from one run to the next.

Each SIT serves the HTTP phase's four API requests, and its two web pages (read with the page
reader's session, signed in through the form; skipped by a SIT without them), in process
(Flask's test client: no gunicorn, no sockets), on an instance seeded as the HTTP phase seeds
it, with the scheduler off (a worker that is not the runner); the count covers `N` requests
after a warm-up, and the system calls' own work (the kernel writing the WAL) is not in it.

Run as a script, it is that harness: `valgrind --tool=callgrind --instr-atstart=no python
bench/instructions.py`, with the instance in `SIT_INSTANCE_PATH` and the checkout on PYTHONPATH.
"""

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import servers

REQUESTS = 100  # counted, per scenario
WARM_UP = 20  # first, uncounted: statements compiled and cached
SCENARIOS = ("get one", "list", "create", "patch", "issue page", "issues page")
PAGES = {"issue page": "/issues/500", "issues page": "/issues/"}
TOTALS = re.compile(r"^totals: (\d+)$", re.MULTILINE)  # a dump's count
TRIGGER = re.compile(r"^desc: Trigger: dump (.+)$", re.MULTILINE)  # its label: the scenario


def harness() -> None:
    """Serve each scenario's requests, counting only theirs (callgrind_control turns
    instrumentation on and dumps the count, one file per scenario)."""
    import sqlalchemy as sa

    from sit import create_app
    from sit.auth import issue_token
    from sit.extensions import db
    from sit.models import Issue, User

    app = create_app()
    with app.app_context():
        demo1 = db.session.scalars(sa.select(User).where(User.username == "demo1")).one()
        demo2 = db.session.scalar(sa.select(User.id).where(User.username == "demo2"))
        token = issue_token(demo1, 3600)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"title": "Benchmark issue", "description": "Made by the bench", "assigned_to": demo2}
    sent = iter(range(10**9))
    sign_in = client.get("/sign-in")
    if sign_in.status_code == 200:
        form = {"username": servers.PAGES_USER, "password": servers.PAGES_PASSWORD,
                "csrf_token": servers.CSRF_FIELD.search(sign_in.text)[1]}  # fmt: skip
        assert client.post("/sign-in", data=form).status_code == 302

    def own_ids() -> list[int]:
        with app.app_context():
            mine = sa.select(Issue.id).where(Issue.created_by_id == demo1.id)
            return list(db.session.scalars(mine.order_by(Issue.id.desc()).limit(500)))

    def requests(scenario: str) -> Any:
        ids = own_ids() if scenario == "patch" else []
        while True:
            n = next(sent)
            if scenario in PAGES:
                yield client.get(PAGES[scenario])
            elif scenario == "get one":
                yield client.get("/api/500/", headers=headers)
            elif scenario == "list":
                yield client.get("/api/", headers=headers)
            elif scenario == "create":
                yield client.post("/api/", json=body, headers=headers)
            else:
                change = {"title": f"patched {n}", "status": "C"}
                yield client.patch(f"/api/{ids[n % len(ids)]}/", json=change, headers=headers)

    def control(*args: str) -> None:
        command = ["callgrind_control", *args, str(os.getpid())]
        subprocess.run(command, check=True, capture_output=True)

    for scenario in SCENARIOS:
        if scenario in PAGES and sign_in.status_code != 200:
            continue  # a SIT from before the web interface
        made = requests(scenario)
        for _ in range(WARM_UP):
            assert next(made).status_code < 300
        control("--zero")
        control("--instr=on")
        answers = [next(made).status_code for _ in range(REQUESTS)]
        control("--instr=off")
        control(f"--dump={scenario}")
        assert all(status < 300 for status in answers), answers


def count(root: Path, instance: Path, env: dict[str, str], folder: Path) -> dict[str, int]:
    """Instructions per request of each scenario, for SIT from the checkout `root` on its
    seeded `instance`."""
    out = folder / f"callgrind-{instance.name}"
    out.mkdir()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.out",
        str(servers.BIN / "python"),
        str(Path(__file__).resolve()),
    ]
    run_env = env | {"SIT_SCHEDULER_ENABLED": "false", "PYTHONPATH": str(root)}
    done = subprocess.run(command, cwd=root, env=run_env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the instructions harness failed: {done.stderr[-2000:]}")
    counts = {}
    for dump in sorted(out.glob("callgrind.out.*")):
        text = dump.read_text(errors="replace")
        scenario, totals = TRIGGER.search(text), TOTALS.search(text)
        if scenario and totals and scenario[1] in SCENARIOS:
            counts[scenario[1]] = int(totals[1]) // REQUESTS
    return counts


if __name__ == "__main__":
    harness()
