"""`--against REF`: SIT as it was at a git ref, checked out in a temporary worktree and run from
there with this virtualenv (the same installed dependencies; that ref's `sit/`, `wsgi.py`,
`gunicorn.conf.py` and migrations)."""

import configparser
import subprocess
from pathlib import Path

import servers


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(servers.ROOT), *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def requirements(setup_cfg: str) -> list[str]:
    parser = configparser.ConfigParser()
    parser.read_string(setup_cfg)
    return parser["options"]["install_requires"].split()


def check_out(ref: str, folder: Path) -> Path:
    """A detached worktree of `ref` in `folder`; warns when that ref asks for other dependencies
    than this checkout installed (it runs with these).

    :raise RuntimeError: `ref` is not a commit of this repository.
    """
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = folder / "checkouts" / commit[:12]
    git("worktree", "add", "--detach", str(path), commit)
    theirs = requirements(git("show", f"{commit}:setup.cfg"))
    ours = requirements((servers.ROOT / "setup.cfg").read_text())
    if theirs != ours:
        print(f"warning: {ref} requires {sorted(set(theirs) ^ set(ours))} differently; it runs "
              "with this checkout's installed packages", flush=True)  # fmt: skip
    return path


def remove(path: Path) -> None:
    git("worktree", "remove", "--force", str(path))
