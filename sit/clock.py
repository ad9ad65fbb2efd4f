"""The one clock of SIT: every "now" comes from here, so tests can move time without sleeping."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def timestamp() -> float:
    """Now in seconds since the epoch (an email's `Date`), from the same clock as `utcnow`."""
    return utcnow().timestamp()
