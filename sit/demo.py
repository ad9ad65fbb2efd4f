"""Demo data in bulk: 10,000 users and 1,000,000 issues take a minute or two, not hours.

Issues carry labels, the n-th of LABELS on one issue in 3n (a third have none); a thousand
issues, spread evenly, have ten comments each and their ten `commented` events."""

import itertools
import random
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import click
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from sit.clock import utcnow
from sit.extensions import db
from sit.models import Comment, Event, Issue, Label, User, issue_labels

CHUNK = 5000  # rows per INSERT batch, and per step of the progress bar
# The words of titles and descriptions, most frequent first, drawn by Zipf's law (the n-th as
# often as n^-1.5): common words ("crash" in a third of issues), rare ones (two in 1,000),
# and every word outside this list absent, so searching a demo tracker means something.
WORDS = """
the page when error user not after fails crash data list shows wrong new login save button
report export file app search email slow update settings server missing request form link
broken account issue test load time text api image admin empty open click mobile browser
window dashboard timeout upload download filter sort message notification password token
session cache database query index import table field value date format language display
layout menu header footer sidebar modal dialog scroll resize zoom print copy paste undo redo
delete remove create edit rename move duplicate invalid unexpected blank null undefined
exception stack trace log warning memory cpu disk network proxy firewall certificate ssl
dns port socket connection retry queue job worker scheduler cron backup restore migration
schema column row permission role group team project board ticket comment attachment label
tag milestone release version build deploy install upgrade config option flag feature
toggle theme dark light color font icon avatar profile signup logout reset verify confirm
invite payment invoice billing subscription plan price checkout cart order shipping address
calendar event reminder schedule deadline task subtask priority status assignee owner
history activity feed timeline audit chart graph metric stats analytics summary total
keyboard shortcut focus tab hover tooltip dropdown checkbox radio slider input validation
encoding unicode emoji accent locale timezone daylight leap second minute android ios
safari firefox chrome edge tablet desktop laptop screen retina pixel render paint flicker
freeze hang lag spinner progress percent overflow truncated wrapped aligned centered hidden
visible disabled enabled readonly focused selected sync offline online webhook callback
endpoint payload cookie redirect loop charset gzip compression latency throughput bandwidth
quota limit throttle spam abuse captcha bot crawler sitemap rss atom markdown preview draft
publish archive trash bin folder directory path symlink permissions chmod mount volume
""".split()  # noqa: SIM905 (a list of 294 words reads best as text)
ZIPF = list(itertools.accumulate(rank**-1.5 for rank in range(1, len(WORDS) + 1)))
# The n-th label is on one issue in 3n: "bug" on a third, "wontfix" on one in 36.
LABELS = "bug feature ui backend docs security performance mobile api database email wontfix"
DISCUSSED = 1_000  # issues with comments and events, spread evenly over the ids
COMMENTS = 10  # comments on each, and `commented` events
DEMO_USERNAME = re.compile(r"demo([1-9][0-9]*)")

Row = dict[str, Any]


def chunks(total: int) -> Iterator[range]:
    """The numbers 1..total, in ranges of at most CHUNK."""
    for start in range(0, total, CHUNK):
        yield range(start + 1, min(start + CHUNK, total) + 1)


def refuse_if_seeded(users: int) -> None:
    """Check that none of demo1..demoN exists, before anything is written.

    :raise ClickException: one of them does (seed-demo ran already).
    """
    names = db.session.scalars(sa.select(User.username).where(User.username.startswith("demo")))
    for name in names:
        match = DEMO_USERNAME.fullmatch(name)
        if match and int(match[1]) <= users:
            raise click.ClickException(f"user {name!r} exists already; seed-demo runs only once")


def user_rows(numbers: range, password_hash: str) -> list[Row]:
    return [
        {
            "username": f"demo{n}",
            "email": f"demo{n}@example.com",
            "first_name": "Demo",
            "last_name": str(n),
            "password_hash": password_hash,
            "token_generation": 0,
        }
        for n in numbers
    ]


def distinct_issue_ids(count: int) -> Iterator[str]:
    """`count` different random 12-hex-digit issue ids."""
    issue_ids: set[str] = set()
    while len(issue_ids) < count:
        issue_ids.add(secrets.token_hex(6))
    return iter(issue_ids)


def text(low: int, high: int) -> str:
    """Between `low` and `high` words of the demo vocabulary, drawn by their frequency."""
    return " ".join(random.choices(WORDS, cum_weights=ZIPF, k=random.randint(low, high)))


def issue_rows(
    numbers: range, user_ids: list[int], issue_ids: Iterator[str], start: datetime
) -> list[Row]:
    """Issue n is created n seconds after `start`; 80% are open, 90% assigned."""
    rows = []
    for n in numbers:
        created = start + timedelta(seconds=n)
        rows.append(
            {
                "issue_id": next(issue_ids),
                "title": text(3, 8).capitalize(),
                "description": text(10, 40),
                "status": "O" if random.random() < 0.8 else "C",
                "assigned_to_id": random.choice(user_ids) if random.random() < 0.9 else None,
                "created_by_id": random.choice(user_ids),
                "created_at": created,
                "updated_at": created,
                "version": 1,
            }
        )
    return rows


def seed(users: int, issues: int, password: str, progress: Callable[[int], Any]) -> None:
    """Add users demo1..demoN, all with `password`, and `issues` issues among them; commits once.

    `users` is at least 1. No assignment emails are scheduled. `progress(rows)` is called after
    each batch.

    :raise ClickException: one of demo1..demoN exists already.
    """
    refuse_if_seeded(users)
    if db.session.get_bind().dialect.name == "sqlite":
        db.session.execute(sa.text("PRAGMA cache_size = -262144"))
    password_hash = generate_password_hash(password)  # scrypt is slow: hash once, share it
    user_ids: list[int] = []
    for numbers in chunks(users):
        rows = user_rows(numbers, password_hash)
        user_ids += db.session.scalars(sa.insert(User).returning(User.id), rows).all()
        progress(len(numbers))
    issue_ids = distinct_issue_ids(issues)
    start = utcnow() - timedelta(seconds=issues)  # the last issue is created now
    label_ids = demo_labels()
    ids: list[int] = []
    for numbers in chunks(issues):
        # A Core insert: the ORM's bulk insert splits a batch wherever assigned_to_id is None.
        rows = issue_rows(numbers, user_ids, issue_ids, start)
        batch = db.session.scalars(sa.insert(Issue.__table__).returning(Issue.id), rows).all()
        if labelled := label_rows(batch, label_ids):
            db.session.execute(sa.insert(issue_labels), labelled)
        ids += batch
        progress(len(numbers))
    if ids:
        discuss(ids[len(ids) // DISCUSSED // 2 :: max(len(ids) // DISCUSSED, 1)], user_ids)
    db.session.commit()
    if db.session.get_bind().dialect.name == "postgresql":
        vacuum()


def demo_labels() -> list[int]:
    """The ids of LABELS, in order; those missing are created."""
    names = LABELS.split()
    existing = sa.select(Label.folded, Label.id).where(Label.folded.in_(names))
    have = dict(db.session.execute(existing).all())
    for name in names:
        if name not in have:
            label = Label()
            label.rename(name)
            db.session.add(label)
            db.session.flush()
            have[name] = label.id
    return [have[name] for name in names]


def label_rows(issue_ids: list[int], label_ids: list[int]) -> list[Row]:
    """Each issue has the n-th label with probability 1/(3n)."""
    return [
        {"issue_id": issue_id, "label_id": label_id}
        for issue_id in issue_ids
        for n, label_id in enumerate(label_ids, 1)
        if random.random() * 3 * n < 1
    ]


def discuss(issue_ids: list[int], user_ids: list[int]) -> None:
    """COMMENTS comments on each issue, each with its `commented` event, a minute apart from an
    hour after the issue's creation; the issue's `comments` count and `updated_at` follow."""
    creation = sa.select(Issue.id, Issue.created_at).where(Issue.id.in_(issue_ids))
    created = dict(db.session.execute(creation).all())
    latest = []
    for issue_id in issue_ids:
        at = [created[issue_id] + timedelta(hours=1, minutes=m) for m in range(COMMENTS)]
        authors = random.choices(user_ids, k=COMMENTS)
        comments = [
            {"issue_id": issue_id, "author_id": author, "body": text(5, 60),
             "created_at": when, "updated_at": when, "version": 1}
            for author, when in zip(authors, at, strict=True)
        ]  # fmt: skip
        table = Comment.__table__
        ids = db.session.scalars(sa.insert(table).returning(table.c.id), comments).all()
        events = [
            {"issue_id": issue_id, "actor_id": author, "event": "commented",
             "details": {"comment": comment_id}, "created_at": when}
            for author, when, comment_id in zip(authors, at, ids, strict=True)
        ]  # fmt: skip
        db.session.execute(sa.insert(Event.__table__), events)
        latest.append({"pk": issue_id, "updated": at[-1]})
    issues = Issue.__table__
    update = sa.update(issues).where(issues.c.id == sa.bindparam("pk"))
    values = {"comment_count": COMMENTS, "updated_at": sa.bindparam("updated")}
    db.session.execute(update.values(values), latest)


def vacuum() -> None:
    """PostgreSQL: now, what autovacuum does some time after a bulk load: the planner's
    statistics (a search plans by how many issues have a word) and the visibility map (a count
    reads an index alone only where the map says every row is visible)."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
