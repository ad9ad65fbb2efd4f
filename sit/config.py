"""Configuration: defaults, duration parsing and the one validation step run at start-up."""

import ipaddress
import os
import re
import secrets
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from flask import Flask


class ConfigError(click.ClickException):
    """A configuration value that stops start-up; its message names the key."""


class Defaults:
    """SIT's defaults; `instance/config.py` and `SIT_<KEY>` environment variables override them."""

    ASSIGNMENT_EMAIL_DELAY = "12m"
    COMMENT_EMAIL_DELAY = "1m"  # how long a comment email waits for more comments to join it
    DIGEST_INTERVAL = "24h"
    TOKEN_MAX_AGE = "7d"
    PUBLIC_URL = "http://127.0.0.1:8000"
    SCHEDULER_ENABLED = True
    MAX_CONTENT_LENGTH = 1024 * 1024
    EMAIL_RETRY_DELAY = "30s"  # the first retry of a failed email; doubles each time, up to 1 h
    EMAIL_RETRY_FOR = "1d"  # then the email is marked failed
    # Flask-Mail's own keys. No MAIL_SERVER: each email becomes an .eml file in <instance>/outbox/.
    MAIL_SERVER = None
    MAIL_PORT = 25
    MAIL_USE_TLS = False
    MAIL_USE_SSL = False
    MAIL_USERNAME = None
    MAIL_PASSWORD = None
    MAIL_DEFAULT_SENDER = "SIT <sit@localhost>"
    MAIL_CA_FILE = None  # CA certificates (PEM) to trust for the SMTP server; else the system's
    MAIL_TLS_VERIFY = True  # false: the server's certificate and host name go unchecked
    WEBHOOK_TIMEOUT = "10s"  # a delivery that takes longer is a failed attempt
    WEBHOOK_RETRY_SCHEDULE = (
        "5s,5m,30m,2h,5h,10h,10h"  # after each failed attempt (Standard Webhooks)
    )
    WEBHOOK_DISABLE_AFTER = "5d"  # an endpoint whose deliveries all failed this long is deactivated
    WEBHOOK_ALLOWED_HOSTS = ""  # hostnames, CIDRs, `loopback`, `private`: targets allowed anyway
    METRICS_TOKEN = None  # when set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`
    PROXY_FIX = None  # "x_for=1,x_proto=1": proxies in front setting each X-Forwarded-* header
    SQLALCHEMY_DATABASE_URI = None  # sqlite:///<instance>/sit.db, filled in by load()
    SECRET_KEY = None  # generated once into <instance>/secret_key, filled in by load()


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)


def parse_duration(value: Any) -> int:
    """Seconds in `720`, `"720"`, `"10s"`, `"12m"` or `"1h30m"` (units d, h, m, s in that order).

    :raise ValueError: the value is not such a duration.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _DURATION.fullmatch(text)
        if text and match:
            return sum(
                int(n or 0) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS, strict=True)
            )
    raise ValueError(f"{value!r} is not a duration (seconds, or whole units like 10s, 12m, 1h30m)")


def parse_bool(value: Any) -> bool:
    """`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` in any case, or a real bool."""
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "on": True}
    words |= {"false": False, "0": False, "no": False, "off": False}
    key = str(value).strip().lower()
    if key not in words:
        raise ValueError(f"{value!r} is not true or false")
    return words[key]


def parse_public_url(value: Any) -> str:
    """An absolute http(s) URL without a trailing slash."""
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an absolute http:// or https:// URL")
    return str(value).rstrip("/")


def parse_positive_duration(value: Any) -> int:
    """A duration of at least one second."""
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError(f"{value!r} must be at least one second")
    return seconds


def parse_port(value: Any) -> int:
    """A TCP port number, 1-65535."""
    if isinstance(value, bool) or not str(value).strip().isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return int(value)


def parse_optional_text(value: Any) -> str | None:
    """Text, or None when empty (`SIT_MAIL_PASSWORD=123` arrives as a number: made text again)."""
    return None if value is None or value == "" else str(value)


def parse_sender(value: Any) -> str:
    """An address, alone or as `Name <address>`."""
    if not isinstance(value, str) or "@" not in value:
        raise ValueError(f"{value!r} is not an email address")
    return value


def parse_ca_file(value: Any) -> str | None:
    """A readable PEM file of CA certificates, or None."""
    path = parse_optional_text(value)
    if path is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise ValueError(f"{path!r} holds no PEM certificate") from None
    except OSError as error:
        raise ValueError(f"{path!r} cannot be read ({error.strerror})") from None
    return path


def parse_schedule(value: Any) -> tuple[int, ...]:
    """Durations separated by commas (`5s,5m,30m`); empty for none."""
    return tuple(parse_duration(part) for part in str(value).split(",") if part.strip())


HOST_WORDS = ("loopback", "private")
HOSTNAME = r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9])?"


def parse_allowed_hosts(value: Any) -> tuple[str, ...]:
    """Hostnames, CIDRs (`10.0.0.0/8`, `::1/128`, a bare address) and the words `loopback` and
    `private`, separated by commas or spaces; each in lower case, networks in their strict form."""
    entries = []
    for entry in str(value or "").replace(",", " ").lower().split():
        try:
            entries.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            if entry not in HOST_WORDS and not re.fullmatch(HOSTNAME, entry):
                message = f"{entry!r} is not a hostname, a CIDR, loopback or private"
                raise ValueError(message) from None
            entries.append(entry)
    return tuple(entries)


PROXY_HEADERS = ("x_for", "x_proto", "x_host", "x_port", "x_prefix")


def parse_proxy_fix(value: Any) -> dict[str, int] | None:
    """Werkzeug `ProxyFix`'s hop counts from `x_for=1,x_proto=1`, or None."""
    if value is None or value == "":
        return None
    counts = {}
    for item in str(value).split(","):
        name, _, count = (part.strip() for part in item.partition("="))
        if name not in PROXY_HEADERS or not count.isdigit():
            raise ValueError(f"{value!r}: give {', '.join(PROXY_HEADERS)} as name=count pairs")
        counts[name] = int(count)
    return counts


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "ASSIGNMENT_EMAIL_DELAY": parse_duration,
    "COMMENT_EMAIL_DELAY": parse_duration,
    "DIGEST_INTERVAL": parse_positive_duration,
    "TOKEN_MAX_AGE": parse_positive_duration,
    "PUBLIC_URL": parse_public_url,
    "SCHEDULER_ENABLED": parse_bool,
    "EMAIL_RETRY_DELAY": parse_positive_duration,
    "EMAIL_RETRY_FOR": parse_duration,
    "MAIL_SERVER": parse_optional_text,
    "MAIL_PORT": parse_port,
    "MAIL_USE_TLS": parse_bool,
    "MAIL_USE_SSL": parse_bool,
    "MAIL_USERNAME": parse_optional_text,
    "MAIL_PASSWORD": parse_optional_text,
    "MAIL_DEFAULT_SENDER": parse_sender,
    "MAIL_CA_FILE": parse_ca_file,
    "MAIL_TLS_VERIFY": parse_bool,
    "METRICS_TOKEN": parse_optional_text,
    "WEBHOOK_TIMEOUT": parse_positive_duration,
    "WEBHOOK_RETRY_SCHEDULE": parse_schedule,
    "WEBHOOK_DISABLE_AFTER": parse_duration,
    "WEBHOOK_ALLOWED_HOSTS": parse_allowed_hosts,
    "PROXY_FIX": parse_proxy_fix,
}


def load(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Fill `app.config`: defaults, `instance/config.py`, `SIT_*` variables, then `overrides`.

    :raise ConfigError: a value is invalid or a `SIT_*` variable names no known key.
    """
    make_instance_folder(Path(app.instance_path))
    app.config.from_object(Defaults)
    app.config.from_pyfile("config.py", silent=True)
    known = set(app.config)
    app.config.from_prefixed_env("SIT")
    unknown = sorted(set(app.config) - known - {"INSTANCE_PATH"})
    if unknown:
        raise ConfigError(f"SIT_{unknown[0]}: unknown configuration key")
    app.config.update(overrides or {})
    for key, parse in _PARSERS.items():
        try:
            app.config[key] = parse(app.config[key])
        except ValueError as error:
            raise ConfigError(f"{key}: {error}") from None
    if app.config["MAIL_USE_TLS"] and app.config["MAIL_USE_SSL"]:
        raise ConfigError("MAIL_USE_SSL: choose it or MAIL_USE_TLS (STARTTLS), not both")
    tls = app.config["MAIL_USE_TLS"] or app.config["MAIL_USE_SSL"]
    if tls and not app.config["MAIL_TLS_VERIFY"]:
        app.logger.warning(
            "MAIL_TLS_VERIFY is false: the SMTP server's certificate and host name are not "
            "verified, so anyone in between can read MAIL_PASSWORD and every email"
        )
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(app.instance_path) / 'sit.db'}"
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = read_or_create_secret_key(Path(app.instance_path))


def make_instance_folder(instance: Path) -> None:
    """Make the instance folder (mode 0700) when it is missing, in every process, whatever else is
    configured: the runner's lock file and the `.eml` outbox live there even when the database
    is elsewhere and the secret key comes from the environment.

    :raise ConfigError: the path cannot be a folder (a file is there, or its parent is unwritable).
    """
    try:
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        in_the_way = isinstance(error, FileExistsError | NotADirectoryError)
        reason = "a file is in the way" if in_the_way else error.strerror or str(error)
        message = f"cannot make the folder {instance}: {reason}"
        raise ConfigError(f"SIT_INSTANCE_PATH: {message}") from None


def read_or_create_secret_key(instance: Path) -> str:
    """The key in `<instance>/secret_key`, created once (mode 0600) even when workers race."""
    path = instance / "secret_key"
    if not path.exists():
        draft = instance / f".secret_key.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic: the first writer wins, the others read its key
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
