"""`flask sit ...`: thin commands around plain functions; bad input is one line on stderr."""

import sys
from typing import Any

import click
import sqlalchemy as sa
from click.exceptions import NoArgsIsHelpError
from flask import Flask, current_app
from flask.cli import AppGroup
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

from sit import demo, health, jobs, scheduler
from sit.accounts import UsernameTaken, create_user, random_password
from sit.auth import issue_token
from sit.config import parse_positive_duration
from sit.extensions import db
from sit.models import NOTIFY, Email, User
from sit.schemas import NewUser


def one_line(error: click.UsageError) -> click.ClickException:
    """The usage error as just its message, without Click's usage and hint lines."""
    short = click.ClickException(" ".join(error.format_message().split()))
    short.exit_code = error.exit_code
    return short


class OneLineErrors(AppGroup):
    """Usage and database errors end the command with one line on stderr, never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:
            raise  # plain `flask sit` lists the commands
        except click.UsageError as error:
            raise one_line(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise one_line(error) from None
        except SQLAlchemyError as error:
            raise database_error(error) from None


def database_error(error: SQLAlchemyError, exit_code: int = 1) -> click.ClickException:
    """The database's complaint in one line."""
    message = str(getattr(error, "orig", None) or error).splitlines()[0]
    # "no such table" (SQLite) and "relation does not exist" (PostgreSQL) land here
    schema = isinstance(error, OperationalError | ProgrammingError)
    hint = " (did `flask db upgrade` run?)" if schema else ""
    short = click.ClickException(f"database: {message}{hint}")
    short.exit_code = exit_code
    return short


sit = OneLineErrors("sit", help="Manage SIT's users, tokens, emails and demo data.")


def find_user(username: str) -> User:
    """The user with this username.

    :raise ClickException: there is none.
    """
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    return user


def require_password(password: str) -> str:
    """The password, if it may be used.

    :raise ClickException: it is empty.
    """
    if not password:
        raise click.ClickException("password: may not be empty")
    return password


def ask_password() -> str:
    """A new password, typed twice: hidden on a terminal, read as two lines from piped input.

    :raise ClickException: the input ended (or Ctrl-C) before a password was given.
    """
    hidden = sys.stdin.isatty()
    try:
        return click.prompt("Password", hide_input=hidden, confirmation_prompt=True)
    except click.Abort:
        if not hidden:
            click.echo()  # end the prompt's line, as a hidden prompt does itself
        raise click.ClickException("password: none given; pass --password or type it") from None


def check_new_user(username: str, email: str, first_name: str = "", last_name: str = "") -> None:
    """Check a new user's fields, as `POST /api/users/` does, before anything is asked or written.

    :raise ClickException: naming the first field that is wrong.
    """
    try:
        NewUser(username=username, email=email, first_name=first_name, last_name=last_name)
    except ValidationError as error:
        first = error.errors()[0]
        raise click.ClickException(f"{first['loc'][0]}: {first['msg']}") from None
    if db.session.scalar(sa.select(User.id).where(User.username == username)):
        raise click.ClickException(f"username: {username!r} is taken")


def create_first_user() -> str | None:
    """`admin`, an admin with a random password, when there is no user yet; returns that
    password."""
    if db.session.scalar(sa.select(User.id).limit(1)) is not None:
        return None
    password = random_password()
    try:
        create_user("admin", "admin@localhost", password, is_admin=True)
    except UsernameTaken:  # another host, started at the same moment, made it first
        return None
    return password


@sit.command("create-user")
@click.argument("username")
@click.option("--email", required=True)
@click.option("--first-name", default="")
@click.option("--last-name", default="")
@click.option("--password", help="Asked for (twice) when left out.")
@click.option("--admin", is_flag=True, help="An admin: may create, change and deactivate users.")
def create_user_command(
    username: str,
    email: str,
    first_name: str,
    last_name: str,
    password: str | None,
    admin: bool,
) -> None:
    """Add a user who can sign in and be assigned issues."""
    check_new_user(username, email, first_name, last_name)
    password = require_password(ask_password() if password is None else password)
    try:
        user = create_user(username, email, password, first_name, last_name, is_admin=admin)
    except UsernameTaken as error:  # taken since the check above
        raise click.ClickException(str(error)) from None
    role = "admin" if admin else "user"
    click.echo(f"created {role} {user.username} (id {user.id})")


@sit.command("first-user")
def first_user_command() -> None:
    """Create the admin `admin` with a random password (printed once) if there is no user."""
    password = create_first_user()
    if password:
        click.echo(f"created the first user: admin / {password}  (shown once; keep it)")


@sit.command("create-token")
@click.argument("username")
@click.option("--expires-in", help="A duration such as 30d; TOKEN_MAX_AGE if left out.")
def create_token_command(username: str, expires_in: str | None) -> None:
    """Print an access token for a user."""
    try:
        seconds = parse_positive_duration(expires_in or current_app.config["TOKEN_MAX_AGE"])
    except ValueError as error:
        raise click.ClickException(f"--expires-in: {error}") from None
    click.echo(issue_token(find_user(username), seconds))


@sit.command("revoke-tokens")
@click.argument("username")
def revoke_tokens_command(username: str) -> None:
    """Invalidate every token issued to a user so far."""
    find_user(username).revoke_tokens()
    db.session.commit()
    click.echo(f"revoked every token of {username}")


@sit.command("set-password")
@click.argument("username")
@click.option("--password", help="Asked for (twice) when left out.")
def set_password_command(username: str, password: str | None) -> None:
    """Change a user's password; their existing tokens stop working."""
    user = find_user(username)
    password = ask_password() if password is None else password
    user.set_password(require_password(password))
    db.session.commit()
    click.echo(f"changed the password of {username}; their old tokens are revoked")


@sit.command("seed-demo")
@click.option("--users", type=click.IntRange(1, 1_000_000), required=True)
@click.option("--issues", type=click.IntRange(0, 10_000_000), required=True)
@click.option("--password", help="The demo users' password; random if left out.")
def seed_demo_command(users: int, issues: int, password: str | None) -> None:
    """Add demo users demo1... and issues assigned among them (no emails are scheduled)."""
    password = require_password(random_password() if password is None else password)
    demo.refuse_if_seeded(users)  # before the progress bar draws anything
    with click.progressbar(length=users + issues, label="seeding", file=sys.stderr) as bar:
        demo.seed(users, issues, password, progress=bar.update)
    click.echo(f"added {users} users (password {password}) and {issues} issues")


@sit.command("send-digest")
def send_digest_command() -> None:
    """Send every user with assigned issues their digest now."""
    runner = scheduler.get()
    if runner.lock.acquire(blocking=False):  # no server runs jobs: send from here
        try:
            queued, sent = jobs.send_digest()
        finally:
            runner.lock.release()
        click.echo(f"queued {queued} digests; sent {sent} emails")
    else:
        runner.run_soon(scheduler.DIGEST, "digest-now")
        click.echo("a running server holds the runner lock: it sends the digests now")


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Columns as wide as their widest cell; the last one as long as it is."""
    cells = [header, *[tuple("" if v is None else str(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    for row in cells:
        click.echo("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]))


def when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


@sit.command("jobs")
def jobs_command() -> None:
    """List the scheduled jobs and when each runs next (UTC)."""
    rows = [(job.id, when(job.next_run_time), job.name) for job in scheduler.get().jobs()]
    print_table(("job", "next run (UTC)", "what"), rows)


@sit.command("outbox")
@click.option("--state", type=click.Choice(["pending", "sent", "cancelled", "failed"]))
@click.option("--kind", type=click.Choice(list(NOTIFY)))
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
def outbox_command(state: str | None, kind: str | None, limit: int) -> None:
    """List emails, newest first: kind, state, recipient, subject, attempts, last error."""
    query = sa.select(Email).order_by(Email.id.desc()).limit(limit)
    if state:
        query = query.where(Email.state == state)
    if kind:
        query = query.where(Email.kind == kind)
    rows = [
        (
            email.id,
            email.kind,
            email.state,
            when(email.sent_at or email.due_at),
            email.to_address,
            email.attempts,
            email.last_error or "",
            email.subject,
        )
        for email in db.session.scalars(query)
    ]
    header = ("id", "kind", "state", "due/sent (UTC)", "recipient", "attempts", "last error")
    header += ("subject",)
    print_table(header, rows)


def describe(delivery: health.Delivery) -> list[str]:
    """How delivery stands, a line for each fact `/healthz` gives."""
    runner = delivery.runner
    seen = f"{runner.host} pid {runner.pid}, since {when(runner.since)} UTC" if runner else None
    facts = {
        "status": delivery.status,
        "database": "ok",
        "runner": seen or f"none seen in the last {health.SEEN_SECONDS} s",
        "pending": delivery.pending,
        "retrying": delivery.retrying,
        "overdue": delivery.overdue,
        "failed": delivery.failed,
        "last error": delivery.last_error or "-",
    }
    return [f"{name + ':':<12}{value}" for name, value in facts.items()]


@sit.command("status")
@click.pass_context
def status_command(ctx: click.Context) -> None:
    """Print how email delivery stands; exit 0 healthy, 1 degraded, 2 database unreachable."""
    try:
        delivery = health.read()
    except SQLAlchemyError as error:
        raise database_error(error, exit_code=2) from None
    click.echo("\n".join(describe(delivery)))
    ctx.exit(0 if delivery.status == "ok" else 1)


def init_app(app: Flask) -> None:
    app.cli.add_command(sit)
