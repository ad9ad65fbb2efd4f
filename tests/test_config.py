"""Configuration: durations, overrides in order, validation naming the key, the secret key."""

import logging
import re
import stat

import pytest
from helpers import flask_cli

from sit import create_app
from sit.config import ConfigError, parse_bool, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (720, 720),
        ("720", 720),
        ("10s", 10),
        ("12m", 720),
        ("10h", 36000),
        ("1h30m", 5400),
        ("7d", 604800),
        ("1d2h3m4s", 93784),
        (" 5m ", 300),
        (0, 0),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "soon", "1.5h", "30m1h", "-5", -5, "5 m", "m", True, None, 1.5, "12M"]
)
def test_parse_duration_refuses(value):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "result"),
    [(True, True), ("false", False), ("TRUE", True), ("0", False), ("yes", True), ("off", False)],
)
def test_parse_bool(value, result):
    assert parse_bool(value) is result


def test_defaults(instance, monkeypatch):
    monkeypatch.delenv("SIT_SQLALCHEMY_DATABASE_URI", raising=False)  # set on PostgreSQL runs
    app = create_app()
    assert app.config["ASSIGNMENT_EMAIL_DELAY"] == 720
    assert app.config["DIGEST_INTERVAL"] == 86400
    assert app.config["TOKEN_MAX_AGE"] == 604800
    assert app.config["PUBLIC_URL"] == "http://127.0.0.1:8000"
    assert app.config["SCHEDULER_ENABLED"] is True
    assert (app.config["MAIL_CA_FILE"], app.config["MAIL_TLS_VERIFY"]) == (None, True)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance / 'sit.db'}"
    assert app.config["WEBHOOK_RETRY_SCHEDULE"] == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert (app.config["WEBHOOK_TIMEOUT"], app.config["WEBHOOK_DISABLE_AFTER"]) == (10, 432000)
    assert app.config["WEBHOOK_ALLOWED_HOSTS"] == ()


def test_allowed_hosts_are_names_networks_and_two_words(instance, monkeypatch):
    monkeypatch.setenv("SIT_WEBHOOK_ALLOWED_HOSTS", "Hooks.Example, 10.1.0.0/16 ::1 Loopback")
    monkeypatch.setenv("SIT_WEBHOOK_RETRY_SCHEDULE", "")
    app = create_app()
    allowed = ("hooks.example", "10.1.0.0/16", "::1/128", "loopback")
    assert app.config["WEBHOOK_ALLOWED_HOSTS"] == allowed
    assert app.config["WEBHOOK_RETRY_SCHEDULE"] == ()


def test_environment_overrides_instance_config(instance, monkeypatch):
    (instance / "config.py").write_text('DIGEST_INTERVAL = "10h"\nTOKEN_MAX_AGE = "1d"\n')
    monkeypatch.setenv("SIT_DIGEST_INTERVAL", "10")
    monkeypatch.setenv("SIT_PUBLIC_URL", "https://sit.example.org/")
    monkeypatch.setenv("SIT_SCHEDULER_ENABLED", "false")
    app = create_app()
    assert app.config["DIGEST_INTERVAL"] == 10
    assert app.config["TOKEN_MAX_AGE"] == 86400
    assert app.config["PUBLIC_URL"] == "https://sit.example.org"
    assert app.config["SCHEDULER_ENABLED"] is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ASSIGNMENT_EMAIL_DELAY", "12 minutes"),
        ("DIGEST_INTERVAL", "0"),
        ("TOKEN_MAX_AGE", "x"),
        ("PUBLIC_URL", "sit.example.org"),
        ("SCHEDULER_ENABLED", "perhaps"),
        ("MAIL_TLS_VERIFY", "perhaps"),
        ("WEBHOOK_TIMEOUT", "0"),
        ("WEBHOOK_RETRY_SCHEDULE", "5s,soon"),
        ("WEBHOOK_ALLOWED_HOSTS", "loopback, 10.0.0.0/33"),
        ("WEBHOOK_ALLOWED_HOSTS", "https://hooks.example.com"),
    ],
)
def test_bad_values_stop_start_up_naming_the_key(instance, monkeypatch, key, value):
    monkeypatch.setenv(f"SIT_{key}", value)
    with pytest.raises(ConfigError, match=f"^{key}: "):
        create_app()


def test_unknown_environment_key_stops_start_up(instance, monkeypatch):
    monkeypatch.setenv("SIT_DIGEST_INTERVALL", "10s")
    with pytest.raises(ConfigError, match="SIT_DIGEST_INTERVALL: unknown"):
        create_app()


def test_secret_key_is_made_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(tmp_path / "var" / "sit"))
    first = create_app().config["SECRET_KEY"]
    key_file = tmp_path / "var" / "sit" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) == 64
    assert create_app().config["SECRET_KEY"] == first
    assert [p.name for p in key_file.parent.iterdir()] == ["secret_key"]


def test_configured_secret_key_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("SIT_SECRET_KEY", "from-the-environment")
    assert create_app().config["SECRET_KEY"] == "from-the-environment"
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("missing.pem", None, "cannot be read (No such file or directory)"),
        ("empty.pem", "", "holds no PEM certificate"),
        ("notes.txt", "not a certificate\n", "holds no PEM certificate"),
    ],
)
def test_a_ca_file_that_cannot_serve_stops_start_up_naming_the_key(
    instance, monkeypatch, tmp_path, name, text, says
):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    monkeypatch.setenv("SIT_MAIL_CA_FILE", str(path))
    with pytest.raises(ConfigError, match=f"^MAIL_CA_FILE: '{path}' {re.escape(says)}$"):
        create_app()


def test_a_ca_file_of_pem_certificates_is_taken(instance, monkeypatch, trusted_ca):
    monkeypatch.setenv("SIT_MAIL_CA_FILE", str(trusted_ca.file))
    assert create_app().config["MAIL_CA_FILE"] == str(trusted_ca.file)


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"SIT_MAIL_USE_TLS": "true", "SIT_MAIL_TLS_VERIFY": "false"}, True),
        ({"SIT_MAIL_USE_SSL": "true", "SIT_MAIL_TLS_VERIFY": "off"}, True),
        ({"SIT_MAIL_USE_TLS": "true"}, False),
        ({"SIT_MAIL_TLS_VERIFY": "false"}, False),  # no TLS: nothing to verify
    ],
)
def test_turning_tls_verification_off_is_a_warning_at_start(
    instance, monkeypatch, caplog, env, warned
):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    verify = create_app().config["MAIL_TLS_VERIFY"]
    assert verify is ("SIT_MAIL_TLS_VERIFY" not in env)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == warned
    assert all(w.startswith("MAIL_TLS_VERIFY is false: ") for w in warnings)


def test_the_instance_folder_is_made_whatever_else_is_configured(tmp_path, monkeypatch):
    """The database elsewhere and the key from the environment: the runner's lock file and the
    `.eml` outbox still need the folder."""
    folder = tmp_path / "var" / "lib" / "sit"
    monkeypatch.setenv("SIT_INSTANCE_PATH", str(folder))
    monkeypatch.setenv("SIT_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("SIT_SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    create_app()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("where", ["a-file", "a-file/sit"])
def test_an_instance_path_that_cannot_be_a_folder_stops_start_up_in_one_line(tmp_path, where):
    (tmp_path / "a-file").write_text("not a folder")
    path = tmp_path / where
    result = flask_cli(path, "sit", "jobs", SIT_SECRET_KEY="x")
    assert result.returncode == 1
    message = f"Error: SIT_INSTANCE_PATH: cannot make the folder {path}: a file is in the way\n"
    assert result.stderr == message
