"""Where messages go: `.eml` files without MAIL_SERVER; one SMTP connection per pass; SMTP as
providers run it (STARTTLS, TLS from the start, AUTH), where a certificate that does not verify,
a refused login or a missing STARTTLS sends nothing, the password above all."""

from base64 import b64encode
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import trustme
from helpers import SMTP_PASSWORD, SMTP_USER, app_context, flask_cli, outbox
from mailing import assign, deliver_when_due, postponed_errors, two_due_emails

from sit import jobs
from sit.mail.outbox import deliver_due

USER, PASSWORD = SMTP_USER.encode(), SMTP_PASSWORD.encode()  # as the sink reads them


def test_without_a_mail_server_an_email_becomes_an_eml_file(app, new_issue, clock):
    assert app.config["MAIL_SERVER"] is None
    issue = new_issue(title="Printer on fire")
    assert deliver_when_due(app, clock) == 1
    (email,) = outbox()
    assert email.state == "sent"
    (path,) = (Path(app.instance_path) / "outbox").iterdir()
    assert path.name == f"{email.message_id.strip('<>')}.eml"
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert message["To"] == "bob@example.com"
    assert message["Message-ID"] == email.message_id
    assert message["Subject"] == f"Issue #{issue['issue_id']} assigned to you: Printer on fire"
    assert "Printer on fire" in message.get_body(preferencelist=("plain",)).get_content()


def test_a_digest_run_uses_one_smtp_connection(mail_to_sink, alice, bob, carol, clock):
    for user in (alice, bob, carol):
        assign(alice, user, "O", start=clock.now)
    assert jobs.send_digest() == (3, 3)
    assert len({received.peer for received in mail_to_sink.received}) == 1
    assert sorted(r.to[0] for r in mail_to_sink.received) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]


# SMTP as providers run it


def send_now(app, new_issue, alice, clock, **env):
    """Two emails due now, sent by an app configured by `env` as users configure SIT."""
    two_due_emails(app, new_issue, alice, clock)
    with app_context(**env):
        return deliver_due()


@pytest.mark.parametrize("tls", ["starttls", "implicit", "plain"])
def test_mail_goes_out_logged_in(app, auth_sink, trusted_ca, new_issue, alice, clock, tls):
    sink = auth_sink(tls, trusted_ca.ca)
    env = sink.env | {"SIT_MAIL_CA_FILE": str(trusted_ca.file)}
    assert send_now(app, new_issue, alice, clock, **env) == 2
    assert [(r.to, r.login, r.tls) for r in sorted(sink.received, key=lambda r: r.to)] == [
        (["alice@example.com"], USER, tls != "plain"),
        (["bob@example.com"], USER, tls != "plain"),
    ]
    assert sink.logins == [(USER, PASSWORD)]  # once: one connection
    assert {email.state for email in outbox()} == {"sent"}


def assert_password_never_sent(sink):
    """No AUTH reached the server, nor the password in any form (as is, or base64 in AUTH
    PLAIN's or LOGIN's way), nor any message."""
    assert sink.logins == [] and sink.received == []
    assert "AUTH" not in sink.commands()
    for form in (PASSWORD, b64encode(PASSWORD), b64encode(b"\0" + USER + b"\0" + PASSWORD)):
        assert form not in sink.wire


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
@pytest.mark.parametrize(
    ("issuer", "host", "says"),
    [
        ("another CA", "127.0.0.1", "unable to get local issuer certificate"),
        ("trusted CA", "mail.example.org", "IP address mismatch"),
    ],
)
def test_a_certificate_that_does_not_verify_gets_nothing(
    app, auth_sink, trusted_ca, new_issue, alice, clock, tls, issuer, host, says
):
    ca = trustme.CA() if issuer == "another CA" else trusted_ca.ca
    sink = auth_sink(tls, ca, host)
    env = sink.env | {"SIT_MAIL_CA_FILE": str(trusted_ca.file)}
    assert send_now(app, new_issue, alice, clock, **env) == 0
    errors = postponed_errors(app, clock)  # every due email, as for a server that is down
    assert len(set(errors)) == 1 and len(errors) == 2
    assert errors[0].startswith("the SMTP server's certificate did not verify (")
    assert says in errors[0]
    assert_password_never_sent(sink)
    assert sink.commands() == (["EHLO", "STARTTLS"] if tls == "starttls" else [])


def test_a_server_without_starttls_gets_nothing_when_tls_is_asked_for(
    app, auth_sink, trusted_ca, new_issue, alice, clock
):
    sink = auth_sink("plain", trusted_ca.ca)  # offers AUTH without TLS, and no STARTTLS
    env = sink.env | {"SIT_MAIL_USE_TLS": "true"}
    assert send_now(app, new_issue, alice, clock, **env) == 0
    said = "SMTPNotSupportedError: STARTTLS extension not supported by server."
    assert postponed_errors(app, clock) == [said] * 2
    assert_password_never_sent(sink)
    assert sink.commands() == ["EHLO"]


def test_a_refused_login_sends_no_message(app, auth_sink, trusted_ca, new_issue, alice, clock):
    sink = auth_sink("starttls", trusted_ca.ca)
    env = sink.env | {"SIT_MAIL_CA_FILE": str(trusted_ca.file), "SIT_MAIL_PASSWORD": "wrong"}
    assert send_now(app, new_issue, alice, clock, **env) == 0
    said = "login refused: 535 5.7.8 Authentication credentials invalid"
    assert postponed_errors(app, clock) == [said] * 2
    assert sink.logins and set(sink.logins) == {(USER, b"wrong")}
    assert sink.received == [] and "MAIL" not in sink.commands()


def test_mail_tls_verify_false_accepts_any_certificate_and_says_so(
    app, auth_sink, trusted_ca, new_issue, alice, clock, caplog
):
    sink = auth_sink("starttls", trustme.CA(), "mail.example.org")
    env = sink.env | {"SIT_MAIL_TLS_VERIFY": "false"}
    assert send_now(app, new_issue, alice, clock, **env) == 2
    assert {(r.login, r.tls) for r in sink.received} == {(USER, True)}
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("sit")]
    assert warnings == [
        "MAIL_TLS_VERIFY is false: the SMTP server's certificate and host name are not "
        "verified, so anyone in between can read MAIL_PASSWORD and every email"
    ]


def test_send_digest_from_the_command_line_over_starttls_and_auth(
    app, instance, auth_sink, trusted_ca, alice, bob, clock
):
    sink = auth_sink("starttls", trusted_ca.ca)
    assign(alice, bob, "O", start=clock.now)
    env = sink.env | {"SIT_MAIL_CA_FILE": str(trusted_ca.file)}
    result = flask_cli(instance, "sit", "send-digest", **env)
    assert result.returncode == 0, result.stderr
    assert "queued 1 digests; sent 1 emails" in result.stdout
    (received,) = sink.received
    assert (received.to, received.login, received.tls) == (["bob@example.com"], USER, True)
    assert received.subject == "Your SIT digest: 1 issues assigned to you"
