"""Where messages go: one SMTP connection per pass (TLS whose certificate and host name are
verified before any password is sent, AUTH, a timeout), or `.eml` files when no `MAIL_SERVER`
is set."""

import contextlib
import functools
import logging
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

import flask_mail
from flask import current_app

from sit.mail.messages import Message, one_line

log = logging.getLogger(__name__)

SMTP_TIMEOUT_SECONDS = 30

# The server answered, and refused this one message: the connection is still good for the next.
REFUSALS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)


def nothing() -> None:
    pass


END_OF_DATA = b"\r\n.\r\n"  # what `data` sends last: no line of a message is a lone "."


class SMTP(smtplib.SMTP):
    """smtplib's client, which does `meanwhile` once a message is out, while the server reads it
    and before its answer is read: building the next message then costs no time of its own."""

    meanwhile: Callable[[], None] = staticmethod(nothing)

    def send(self, s: bytes | str) -> None:
        super().send(s)
        if isinstance(s, bytes) and s.endswith(END_OF_DATA):
            self.meanwhile()


class SMTP_SSL(SMTP, smtplib.SMTP_SSL):
    """The same over TLS from the start (`MAIL_USE_SSL`)."""


def tls_context() -> ssl.SSLContext:
    """What the server's certificate and host name must verify against: `MAIL_CA_FILE`, else the
    system's trust store (`SSL_CERT_FILE` is honoured); nothing when `MAIL_TLS_VERIFY` is false.
    smtplib verifies nothing without a context (python/cpython#91826), and Flask-Mail gives none."""
    return verifying(current_app.config["MAIL_CA_FILE"], current_app.config["MAIL_TLS_VERIFY"])


@functools.cache
def verifying(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    """Made once per process: loading the system's trust store takes ~70 ms (2-core machine)."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class TimedConnection(flask_mail.Connection):
    """Flask-Mail's connection with a timeout, so that a silent server cannot hang the runner,
    and TLS that is verified before anything else is sent."""

    host: SMTP | None

    def configure_host(self) -> SMTP:
        """:raise: when TLS does not verify or is not offered (the password not sent), or the
        login is refused; the connection is closed."""
        state = self.mail
        if state.use_ssl:
            host = SMTP_SSL(
                state.server, state.port, timeout=SMTP_TIMEOUT_SECONDS, context=tls_context()
            )
        else:
            host = SMTP(state.server, state.port, timeout=SMTP_TIMEOUT_SECONDS)
        try:
            if state.use_tls:
                host.starttls(context=tls_context())  # raises when the server offers none
            if state.username and state.password:
                host.login(state.username, state.password)
        except BaseException:
            host.close()
            raise
        return host


class Outgoing:
    """Where one pass's messages go: one SMTP connection, opened on first use, or `.eml` files
    in `<instance>/outbox/` when there is no `MAIL_SERVER`."""

    def __init__(self) -> None:
        self.state = current_app.extensions["mail"]
        self.connection: TimedConnection | None = None

    def send(self, msg: Message, meanwhile: Callable[[], None]) -> None:
        """Send the message, doing `meanwhile` while the server reads it."""
        if self.state.server is None:
            self.write_eml(msg)
            meanwhile()
            return
        if self.connection is None:
            self.connection = TimedConnection(self.state)
            self.connection.host = self.connection.configure_host()
        self.connection.host.meanwhile = meanwhile
        self.connection.send(msg)  # Flask-Mail's own: its checks, signal and reconnections

    def write_eml(self, msg: Message) -> None:
        folder = Path(current_app.instance_path) / "outbox"
        folder.mkdir(exist_ok=True)
        path = folder / f"{msg.msgId.strip('<>')}.eml"
        draft = path.with_suffix(".draft")
        draft.write_bytes(msg.as_bytes())
        draft.replace(path)  # a reader never sees half a message
        log.info("no MAIL_SERVER set: wrote %r for %s to %s", msg.subject, msg.recipients[0], path)

    def close(self) -> None:
        if self.connection is not None and self.connection.host is not None:
            # Every message sent was already acknowledged: a failing goodbye loses nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.connection.host.quit()


def describe(error: Exception) -> str:
    """What the SMTP server, TLS or the network said, in one line."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return one_line(
            f"the SMTP server's certificate did not verify ({error.verify_message}): "
            "nothing was sent; MAIL_CA_FILE names a CA to trust"
        )
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        error = smtplib.SMTPResponseException(*next(iter(error.recipients.values())))
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        said = one_line(f"{error.smtp_code} {text}")
        if isinstance(error, smtplib.SMTPAuthenticationError):
            return f"login refused: {said}"
        return said
    return one_line(f"{type(error).__name__}: {error}")
