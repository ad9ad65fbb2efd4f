"""Load: Debian's wrk for sustained HTTP load, and a paced Python generator for a fixed rate."""

import http.client
import json
import random
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
THREADS, CONNECTIONS = 2, 32
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def ensure(command: str) -> str:
    """The path of a command from Debian's package of the same name (wrk, valgrind), installed
    with apt-get when it is missing."""
    if not shutil.which(command):
        print(f"{command} is missing: apt-get install -y {command}", flush=True)
        if subprocess.run(["apt-get", "install", "-y", command], check=False).returncode:
            subprocess.run(["apt-get", "update"], check=True)
            subprocess.run(["apt-get", "install", "-y", command], check=True)
    return shutil.which(command) or command


def wrk_command(url: str, seconds: float, token_header: str, script: str | None) -> list[str]:
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--latency"]
    command += ["-H", token_header]
    if script:
        command += ["-s", str(BENCH / script)]
    return [*command, url]


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests per second, p50 and p99 (ms), requests and errors (non-2xx/3xx and socket)."""
    found = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))  # "1.95s " is padded
    errors = sum(map(int, re.findall(r"Non-2xx or 3xx responses: (\d+)", output)))
    for counts in re.findall(r"Socket errors: (.*)$", output, re.M):
        errors += sum(int(n) for n in re.findall(r"\d+", counts))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
        "p50_ms": _ms(found["50"]),
        "p99_ms": _ms(found["99"]),
        "requests": int(re.search(r"(\d+) requests in", output)[1]),
        "errors": errors,
    }


def wrk(
    url: str,
    seconds: float,
    token_header: str,
    script: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    command = wrk_command(url, seconds, token_header, script)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def paced_posts(
    url: str, headers: dict[str, str], bodies: list[dict[str, Any]], rate: float, threads: int = 16
) -> dict[str, Any]:
    """POST each body at its own moment, `rate` per second (open loop: a slow answer does not
    delay the next request); the latency of each and how many failed."""
    parts = urlsplit(url)
    start = time.monotonic() + 0.2
    latencies: list[float] = []
    statuses: list[int] = []
    lag: list[float] = []
    lock = threading.Lock()

    def work(first: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        for i in range(first, len(bodies), threads):
            moment = start + i / rate
            time.sleep(max(0.0, moment - time.monotonic()))
            sent = time.monotonic()
            try:
                connection.request("POST", parts.path, json.dumps(bodies[i]), headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                status = 0
            with lock:
                latencies.append((time.monotonic() - sent) * 1000)
                statuses.append(status)
                lag.append(sent - moment)
        connection.close()

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "requests": len(statuses),
        "seconds": elapsed,
        "rps": len(statuses) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
        "errors": sum(1 for s in statuses if not 200 <= s < 300),
        "max_start_lag_s": max(lag),
    }


def create_bodies(count: int, assignees: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "title": f"Paced issue {n}",
            "description": "created by the lateness benchmark",
            "assigned_to": random.choice(assignees),
        }
        for n in range(count)
    ]
