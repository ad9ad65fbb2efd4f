"""The processes a benchmark run starts: gunicorn servers (SIT, the bare app, the DRF peer, the
seed's stack), the seed's Celery worker and Redis, and the SMTP sink; and what /proc says about
them (CPU time, resident memory)."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")
WORKERS = 4
# How the machine notes of this project start its Redis, should it be down
REDIS_SERVER = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                "--port", "6379", "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
                "--logfile", "/var/log/redis/ci.log"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without SIT_* settings (the run chooses its own), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIT_")}
    env.pop("WEB_CONCURRENCY", None)
    return env | extra


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (a gunicorn master's workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return sorted(pids)


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time these processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Server:
    """A gunicorn master in a process group of its own, with its workers."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    size: int = WORKERS  # how many workers it runs

    def workers(self) -> list[int]:
        return children(self.process.pid)

    def pids(self) -> list[int]:
        return [self.process.pid, *self.workers()]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_ready(server: Server, path: str, headers: dict[str, str], timeout: float = 60) -> None:
    """Wait until `path` answers 200 and every worker has booted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
        try:
            request = urllib.request.Request(server.url + path, headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200 and len(server.workers()) == server.size:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer {path} in {timeout} s")


def start(name: str, command: list[str], env: dict[str, str], folder: Path, cwd: Path) -> Server:
    """`command` in a session of its own, its output in `<folder>/<name>.log`."""
    log = folder / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Server(name, "", process, log)


def gunicorn(
    name: str,
    app: str,
    config: str,
    env: dict[str, str],
    folder: Path,
    workers: int = WORKERS,
    cwd: Path = ROOT,
) -> Server:
    """`gunicorn -c <config> -w <workers> -b <free port> <app>` from the project folder (or from
    `cwd`, another checkout's)."""
    port = free_port()
    args = [str(BIN / "gunicorn"), "-c", config, "-w", str(workers), "-b", f"127.0.0.1:{port}"]
    server = start(name, [*args, *app.split()], env, folder, cwd)
    server.url, server.size = f"http://127.0.0.1:{port}", workers
    return server


def celery_worker(name: str, app: str, env: dict[str, str], folder: Path, cwd: Path) -> Server:
    """`celery -A <app> worker -l INFO`, as Celery's Django guide starts one; returns once it
    says it is ready.

    :raise RuntimeError: it exited or did not get ready within a minute.
    """
    worker = start(name, [str(BIN / "celery"), "-A", app, "worker", "-l", "INFO"], env, folder, cwd)
    deadline = time.monotonic() + 60
    while " ready." not in worker.log.read_text():
        if worker.process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"{name} did not start:\n{worker.log.read_text()[-3000:]}")
        time.sleep(0.2)
    return worker


def ensure_redis(url: str) -> None:
    """Start this machine's Redis, as its machine notes say, when nothing answers at `url`.

    :raise RuntimeError: it still does not answer after 10 s.
    """
    if redis_answers(url):
        return
    print("Redis is down: starting redis-server", flush=True)
    subprocess.run(REDIS_SERVER, check=True)
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis does not answer at {url}")
        time.sleep(0.1)


def redis_answers(url: str) -> bool:
    import redis  # the bench extra's, through Celery; only the seed's stack needs it

    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.ConnectionError:
        return False


PAGES_USER, PAGES_PASSWORD = "reader", "bench pages password"  # who reads the web pages
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_page_reader(env: dict[str, str], root: Path) -> None:
    """The user whose session loads the web pages, in the instance `env` names."""
    flask(env, "sit", "create-user", PAGES_USER, "--email", "r@example.com",
          "--password", PAGES_PASSWORD, cwd=root)  # fmt: skip


def session_cookie(server: Server) -> str:
    """The Cookie header of the page reader's web session, signed in through SIT's form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{server.url}/sign-in", timeout=10) as page:
        token = CSRF_FIELD.search(page.read().decode())[1]
    form = {"username": PAGES_USER, "password": PAGES_PASSWORD, "csrf_token": token}
    with opener.open(f"{server.url}/sign-in", urllib.parse.urlencode(form).encode(), 10):
        pass
    return "Cookie: " + "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


def sit_env(instance: Path, sink_port: int, **extra: str) -> dict[str, str]:
    return clean_env(
        SIT_INSTANCE_PATH=str(instance),
        FLASK_APP="sit",
        SIT_MAIL_SERVER="127.0.0.1",
        SIT_MAIL_PORT=str(sink_port),
        **extra,
    )


def flask(env: dict[str, str], *args: str, timeout: float = 600, cwd: Path = ROOT) -> str:
    """`flask <args>` against the instance `env` names, from the project folder (or from `cwd`,
    another checkout's); its stdout.

    :raise RuntimeError: it failed.
    """
    done = subprocess.run(
        [str(BIN / "flask"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode:
        raise RuntimeError(f"flask {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class Sink:
    """The SMTP sink (`bench/sink.py`) in a subprocess, logging each message it accepts."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "sink.log"
        self.log.touch()
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH / "sink.py"), str(self.port), str(self.log)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.process.stdout is None or self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the SMTP sink did not start")

    def mark(self) -> int:
        return self.log.stat().st_size

    def since(self, mark: int) -> list[tuple[float, int, str]]:
        """(arrival, size, recipient) of each message accepted after `mark`."""
        with self.log.open() as log:
            log.seek(mark)
            rows = [line.split() for line in log if line.strip()]
        return [(float(t), int(size), to) for t, size, to in rows]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
