"""Demo data in bulk: fast enough for 10,000 users and 100,000 issues."""

import random
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import click
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from sit.clock import utcnow
from sit.extensions import db
from sit.models import Issue, User

CHUNK = 5000
WORDS = "login crash slow page export report search email button layout import cache".split()


def chunks(total: int) -> Iterator[range]:
    for start in range(0, total, CHUNK):
        yield range(start + 1, min(start + CHUNK, total) + 1)


def seed(users: int, issues: int, password: str, progress: Callable[[int], Any]) -> None:
    """Add users demo1..demoN and `issues` issues among them, all in one transaction.

    :raise ClickException: the database already has demo users.
    """
    if db.session.scalar(sa.select(User.id).where(User.username.like("demo%")).limit(1)):
        raise click.ClickException("users named demo... exist already; seed an empty database")
    password_hash = generate_password_hash(password)  # hashed once, shared by every demo user
    ids: list[int] = []
    for numbers in chunks(users):
        rows = [
            {"username": f"demo{n}", "email": f"demo{n}@example.com", "first_name": "Demo",
             "last_name": str(n), "password_hash": password_hash, "token_generation": 1}
            for n in numbers
        ]
        ids += db.session.scalars(sa.insert(User).returning(User.id), rows).all()
        progress(len(numbers))
    issue_ids: set[str] = set()
    while len(issue_ids) < issues:
        issue_ids.add(secrets.token_hex(6))
    fresh = iter(issue_ids)
    now = utcnow()
    for numbers in chunks(issues):
        rows = [
            {"issue_id": next(fresh), "title": f"Demo issue {n}: {random.choice(WORDS)}",
             "description": " ".join(random.choices(WORDS, k=12)),
             "status": "O" if random.random() < 0.8 else "C",
             "assigned_to_id": random.choice(ids) if random.random() < 0.9 else None,
             "created_by_id": random.choice(ids), "created_at": now, "updated_at": now,
             "version": 1}
            for n in numbers
        ]
        db.session.execute(sa.insert(Issue), rows)
        progress(len(numbers))
    db.session.commit()
