"""Where messages go: `.eml` files without MAIL_SERVER; one SMTP connection per pass; SMTP as
providers run it (STARTTLS, TLS from the start, AUTH), where a certificate that does not verify,
a refused login or a missing STARTTLS sends nothing, the password above all."""

from email import message_from_bytes, policy
from pathlib import Path

from conftest import outbox
from mailing import assign, deliver_when_due

from sit import jobs


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
