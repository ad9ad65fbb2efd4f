"""SIT's floor: the least a create and a patch can do on SIT's stack, to show what issue 20's
write goals ask of it. Served beside SIT by `make bench` as the target "SIT floor", from its own
instance, as SIT is: `gunicorn -c gunicorn.conf.py --pythonpath bench floor:app`.

It is SIT's app (the same token check, input schemas, answer schema, database, triggers and
indexes), whose `POST /api/` and `PATCH /api/<id>/` go to the two views below instead. Each makes
only the statements the SPEC's write needs, by Core statements built once, with as little Python
between them as a view can have:

- a patch: the issue's row (for the 403 and the version), its `UPDATE ... WHERE version = ?`
  (the search index's triggers, the listings' indexes), the history's events, the commit;
- a create: the assignee's row (their address), the issue's `INSERT`, its event, its assignment
  email in the outbox and the email's job row, the commit.

What it leaves out, each of which SIT's own views do: labels (the answer says none), the
webhooks' check, a deactivated assignee's rule, `If-Match`, the retry on a concurrent change
and the email superseded by a reassignment. So it is not a product and it is not tested: it is a
ceiling. SIT's write can cost no less than this one does.
"""

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint, abort
from flask import current_app

from sit import clock, create_app, events, notifications, scheduler
from sit.extensions import db, token_auth
from sit.issues import respond
from sit.mail.messages import assignment_subject
from sit.models import Issue, User, new_issue_id
from sit.schemas import IssueIn, IssueOut, IssuePatch

bp = APIBlueprint("floor", __name__)
ISSUES = Issue.__table__
COLUMNS = (
    *("id", "issue_id", "title", "description", "assigned_to_id", "status", "comment_count"),
    *("created_at", "updated_at", "version", "created_by_id"),
)
READ = sa.select(*(ISSUES.c[name] for name in COLUMNS)).where(ISSUES.c.id == sa.bindparam("pk"))
UPDATE = (
    ISSUES.update()
    .where(ISSUES.c.id == sa.bindparam("pk"), ISSUES.c.version == sa.bindparam("read_version"))
    .values({name: sa.bindparam(name) for name in ("title", "status", "updated_at", "version")})
)
INSERT = ISSUES.insert().returning(ISSUES.c.id)
ASSIGNEE = sa.select(User.id, User.email).where(User.id == sa.bindparam("id"))


def answer(issue: dict[str, Any]) -> Any:
    caller = token_auth.current_user
    etag = f"{issue['issue_id']}-{issue['version']}"
    return SimpleNamespace(**issue, labels=[], created_by=caller.username, etag=etag)


@bp.patch("/floor/<int:pk>/")
@bp.auth_required(token_auth)
@bp.input(IssuePatch, location="json_or_form")
@bp.output(IssueOut)
def patch(pk: int, json_or_form_data: IssuePatch) -> Any:
    connection = db.session.connection()
    row = connection.execute(READ, {"pk": pk}).one()
    if row.created_by_id != token_auth.current_user.id:
        abort(403)
    fields = json_or_form_data.model_dump(exclude_unset=True)
    happened = events.changed(row, fields)
    issue = row._asdict() | fields | {"updated_at": clock.utcnow(), "version": row.version + 1}
    connection.execute(UPDATE, issue | {"pk": pk, "read_version": row.version})
    events.write(pk, happened)
    db.session.commit()
    return respond(answer(issue))


@bp.post("/floor/")
@bp.auth_required(token_auth)
@bp.input(IssueIn, location="json_or_form")
@bp.output(IssueOut, status_code=201)
def create(json_or_form_data: IssueIn) -> Any:
    connection = db.session.connection()
    fields = json_or_form_data.model_dump(exclude={"labels"})
    assignee = connection.execute(ASSIGNEE, {"id": fields.pop("assigned_to")}).one()
    now = clock.utcnow()
    issue = fields | {"issue_id": new_issue_id(), "assigned_to_id": assignee.id}
    issue |= {"created_by_id": token_auth.current_user.id, "created_at": now, "updated_at": now}
    issue |= {"version": 1, "comment_count": 0}
    issue["id"] = connection.execute(INSERT, issue).scalar_one()
    events.write(issue["id"], events.created())
    due_at = now + timedelta(seconds=current_app.config["ASSIGNMENT_EMAIL_DELAY"])
    email = {"kind": "assignment", "recipient_id": assignee.id, "to_address": assignee.email}
    email |= {"issue_id": issue["id"], "due_at": due_at}
    email["message_id"] = notifications.new_message_id()
    email["subject"] = assignment_subject(SimpleNamespace(**issue))
    email_id = connection.execute(notifications.QUEUE, email).scalar_one()
    scheduler.get().schedule_email(email_id, assignee.email, due_at)
    db.session.commit()
    return respond(answer(issue), 201)


def to_floor(wsgi_app: Any) -> Any:
    """SIT, but for the writes the benchmark makes, which go to the floor's views."""

    def routed(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        if environ["REQUEST_METHOD"] in ("POST", "PATCH") and path.startswith("/api/"):
            environ["PATH_INFO"] = "/floor/" + path[len("/api/") :]
        return wsgi_app(environ, start_response)

    return routed


app = create_app(migrations=False)  # as `wsgi.py`'s, so gunicorn.conf.py's hooks find it
app.register_blueprint(bp)
app.wsgi_app = to_floor(app.wsgi_app)
