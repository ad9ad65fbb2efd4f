"""SQLite tuned for several gunicorn workers writing at once."""

from typing import Any

import sqlalchemy as sa

# Each connection waits up to this long for another process's write to finish.
BUSY_TIMEOUT_SECONDS = 30

PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}",
    "PRAGMA journal_mode = WAL",  # readers never block the writer, nor the writer them
    "PRAGMA synchronous = NORMAL",  # durable at each checkpoint; safe with WAL
    "PRAGMA foreign_keys = ON",
)


def engine_options(uri: str) -> dict[str, Any]:
    """`BEGIN IMMEDIATE` before the first write of a transaction, so a writer queues for the lock
    (up to the busy timeout) instead of failing with "database is locked" when another process
    wrote since it last read. Reads run outside any transaction and never wait."""
    if not uri.startswith("sqlite"):
        return {}
    return {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS, "isolation_level": "IMMEDIATE"}}


def set_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def tune(engine: sa.Engine) -> None:
    """Set the pragmas on each new connection of a SQLite engine."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", set_pragmas)
