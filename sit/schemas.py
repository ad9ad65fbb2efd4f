"""Input and output shapes, one set per resource; they also write the OpenAPI document."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import flask
from flask import current_app, has_request_context, request
from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from sit import errors
from sit.models import MAX_ID

STATUS_ALIASES = {"o": "O", "open": "O", "c": "C", "closed": "C"}
READ_ONLY_FIELDS = frozenset(
    {"id", "issue_id", "created_by", "created_at", "updated_at", "url", "comments"}
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


class Request(flask.Request):
    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        """:raise 400: the body is not JSON, with the parser's reason."""
        raise BadRequest(f"The body is not valid JSON: {e}")


def check_body_type() -> None:
    """:raise 415: a request body that is neither JSON nor a form.
    :raise 400: a JSON body that is not an object (`null` would otherwise pass as `{}`).
    """
    if request.method not in BODY_METHODS:
        return
    has_body = request.content_length or request.headers.get("Transfer-Encoding")
    if has_body and not (request.is_json or request.mimetype in FORM_TYPES):
        raise UnsupportedMediaType(
            f"Send the body as application/json or form-encoded, not {request.mimetype!r}."
        )
    if has_body and request.is_json and not isinstance(request.get_json(), dict):
        errors.invalid({"body": ["must be a JSON object or a form"]})


def _status(value: Any) -> Any:
    return STATUS_ALIASES.get(value.strip().lower(), value) if isinstance(value, str) else value


def _user_ref(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a user id (an integer) or null")
    return None if value == "" else value


FORM_FLAGS = {"true": True, "false": False}


def _flag(value: Any) -> Any:
    """JSON's true and false, or in a form (which has no booleans) their names; nothing else
    (lax pydantic would also take 0, "yes" or "on")."""
    in_form = has_request_context() and not request.is_json
    if isinstance(value, str) and in_form and value in FORM_FLAGS:
        return FORM_FLAGS[value]
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "must be true or false")
    return value


def _nul_free(value: str) -> str:
    if "\x00" in value:
        raise ValueError("may not contain NUL characters")
    return value


# PostgreSQL's text columns cannot hold NUL, so no text SIT stores or looks up may contain it.
NUL_FREE = (AfterValidator(_nul_free), Field(json_schema_extra={"pattern": r"^[^\x00]*$"}))


def matching(pattern: str, message: str) -> tuple[Any, ...]:
    """A check that the whole text matches `pattern` (failing with `message`), and the pattern
    in the OpenAPI document."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise PydanticCustomError("pattern", message)
        return value

    return AfterValidator(check), Field(json_schema_extra={"pattern": pattern})


USERNAME = r"^[\w.@+-]{1,150}$"
EMAIL = r"^[^@\s\x00]+@[^@\s\x00]+$"

Status = Annotated[Literal["O", "C"], BeforeValidator(_status)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Text = Annotated[str, *NUL_FREE]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), *NUL_FREE
]
Line = Annotated[str, StringConstraints(max_length=150), *NUL_FREE]  # a username, words to find
Username = Annotated[str, *matching(USERNAME, "1-150 letters, digits and @ . + - _")]
EmailAddress = Annotated[
    str, StringConstraints(max_length=254), *matching(EMAIL, "not an email address")
]
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
DbId = Annotated[int, Field(ge=1, le=MAX_ID)]
UserRef = Annotated[DbId | None, BeforeValidator(_user_ref)]


def utc_text(at: datetime) -> str:
    """UTC, to the second: 2026-11-24T09:30:00Z."""
    return at.isoformat(timespec="seconds")[:19] + "Z"


Timestamp = Annotated[datetime, PlainSerializer(utc_text, return_type=str)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("may not be blank")
    return value


def _repeated(value: Any, info: ValidationInfo) -> Any:
    """A list, given in a query string or a form as a repeated parameter (`label=a&label=b`),
    of which APIFlask passes on the first only; an empty one (`labels=`) is an empty list."""
    if not (isinstance(value, str) and has_request_context()):
        return value
    for given in (request.args, request.form):
        if given.get(info.field_name) == value:
            return [item for item in given.getlist(info.field_name) if item]
    return value


def _names(value: Any) -> Any:
    """Labels (or their names), as their names in alphabetical order."""
    return sorted((getattr(label, "name", label) for label in value), key=str.casefold)


CommentBody = Annotated[
    str, StringConstraints(min_length=1, max_length=65_536), AfterValidator(_not_blank), *NUL_FREE
]
LabelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50), *NUL_FREE
]
LabelNames = Annotated[list[LabelName], BeforeValidator(_repeated)]
Color = Annotated[
    str, *matching(r"^#[0-9a-fA-F]{6}$", "a color as #rrggbb"), AfterValidator(str.lower)
]
Description = Annotated[str, StringConstraints(max_length=255), *NUL_FREE]


def issue_url(pk: int) -> str:
    """An issue's address under `PUBLIC_URL`, never under the request's Host header."""
    return f"{current_app.config['PUBLIC_URL']}/api/{pk}/"


def issue_page_url(pk: int) -> str:
    """An issue's web page (`sit.web`) under `PUBLIC_URL`: the link of every email about it."""
    return f"{current_app.config['PUBLIC_URL']}/issues/{pk}"


def user_url(pk: int) -> str:
    """A user's address under `PUBLIC_URL`, as `issue_url`."""
    return f"{current_app.config['PUBLIC_URL']}/api/users/{pk}/"


def comment_url(issue: int, pk: int) -> str:
    """A comment's address under `PUBLIC_URL`, as `issue_url`."""
    return f"{current_app.config['PUBLIC_URL']}/api/{issue}/comments/{pk}/"


def label_url(pk: int) -> str:
    """A label's address under `PUBLIC_URL`, as `issue_url`."""
    return f"{current_app.config['PUBLIC_URL']}/api/labels/{pk}/"


class WritableIssue(BaseModel):
    """Read-only fields a client sends back are dropped; any other unknown field is an error."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
        return data


class IssueIn(WritableIssue):
    """A new issue, or every writable field of one (PUT): what is left out takes its default."""

    title: Title
    description: Text = ""
    assigned_to: UserRef = Field(default=None, description="A user's id, or null")
    status: Status = Field(default="O", description="O (open) or C (closed); open/closed too")
    labels: LabelNames = Field(default=[], description="Names of labels, ignoring case: the set")


def refuse_null(value: Any) -> Any:
    """A field a patch may leave out, but not set to null."""
    if value is None:
        raise ValueError("may not be null")
    return value


def _no_defaults(schema: dict[str, Any]) -> None:
    for field in schema["properties"].values():
        field.pop("default", None)


class IssuePatch(WritableIssue):
    """Only the fields given change: none has a default, and only `assigned_to` may be null."""

    model_config = ConfigDict(json_schema_extra=_no_defaults)

    title: Title | SkipJsonSchema[None] = None
    description: Text | SkipJsonSchema[None] = None
    assigned_to: UserRef = Field(default=None, description="A user's id, or null")
    status: Status | SkipJsonSchema[None] = Field(default=None, description="O, C, open or closed")
    labels: LabelNames | SkipJsonSchema[None] = Field(
        default=None, description="Names of labels, ignoring case: the new set"
    )

    _not_null = field_validator("title", "description", "status", "labels", mode="before")(
        refuse_null
    )


class Output(BaseModel):
    """An answer, documented as it is sent: by its output names, with computed fields."""

    model_config = ConfigDict(from_attributes=True, json_schema_mode_override="serialization")


class IssueOut(Output):
    id: int
    issue_id: str
    title: str
    description: str
    assigned_to: int | None = Field(validation_alias="assigned_to_id")
    created_by: str = Field(  # a listing row's column, or an Issue's creator's username
        validation_alias=AliasChoices("created_by", AliasPath("creator", "username"))
    )
    status: Literal["O", "C"]
    labels: Annotated[list[str], BeforeValidator(_names)] = Field(
        description="Its labels' names, alphabetically"
    )
    comments: int = Field(validation_alias="comment_count", description="How many comments")
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return issue_url(self.id)


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page: int = Field(default=1, ge=1, le=10**9)
    per_page: int = Field(default=30, ge=1, le=100)
    cursor: str | None = Field(
        default=None, max_length=300, description="Where a Link header's next or prev goes on"
    )


class IssueQuery(PageQuery):
    status: Status | None = None
    label: LabelNames = Field(
        default=[], description="Issues with this label (repeat: with all of them), or `none`"
    )
    assigned_to: Literal["me", "none"] | DbId | None = Field(
        default=None, description="A user's id, `me` or `none`"
    )
    created_by: Line | None = Field(default=None, description="A username or `me`")
    q: Line | None = Field(default=None, description="Words to find (all of them)")
    sort: Literal["id", "created", "updated"] = "created"
    direction: Literal["asc", "desc"] = "desc"


class SubscriptionOut(Output):
    """Whether the caller watches an issue (gets its comment emails), and why."""

    subscribed: bool
    ignored: bool = Field(description="true: no comment emails, whatever the other reasons")
    reason: Literal["creator", "assignee", "commented", "manual"] | None


class UserOut(Output):
    id: int
    username: str
    first_name: str
    last_name: str


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: CommentBody = Field(description="1 to 65,536 characters, not all blank")


class CommentOut(Output):
    id: int
    issue: int = Field(validation_alias="issue_id", description="The issue's id")
    author: UserOut
    body: str
    created_at: Timestamp
    updated_at: Timestamp

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return comment_url(self.issue, self.id)


EVENTS = (
    *("created", "renamed", "edited", "assigned", "closed", "reopened"),
    *("labeled", "unlabeled", "commented", "comment_deleted"),
)


# Not an `Output`: it computes no field, and pydantic cannot document a model with a
# `json_schema_mode_override` that names another model twice (a `KeyError` in 2.14).
class EventOut(BaseModel):
    """One thing that happened to an issue; each kind has its own fields, and only those."""

    id: int
    event: Literal[EVENTS]  # type: ignore[valid-type]
    actor: UserOut
    created_at: Timestamp
    from_: str | UserOut | None = Field(
        default=None,
        alias="from",
        description="renamed: the old title; assigned: the previous assignee, or null",
    )
    to: str | UserOut | None = Field(
        default=None, description="renamed: the new title; assigned: the new assignee, or null"
    )
    label: str | None = Field(default=None, description="labeled, unlabeled: the label's name")
    comment: int | None = Field(
        default=None, description="commented, comment_deleted: the comment's id"
    )


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: LabelName = Field(description="Unique ignoring case; not `none`")
    color: Color = "#ededed"
    description: Description = ""


class LabelPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)

    name: LabelName | SkipJsonSchema[None] = Field(
        default=None, description="Unique ignoring case; not `none`"
    )
    color: Color | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None

    _not_null = field_validator("*", mode="before")(refuse_null)


class LabelOut(Output):
    id: int
    name: str
    color: str
    description: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return label_url(self.id)


class MeOut(UserOut):
    """A user as they see themself, and as admins see every user."""

    email: str
    is_admin: bool
    active: bool
    notify_assignments: bool
    notify_digest: bool
    notify_comments: bool


class NewUserOut(MeOut):
    password: str | None = Field(
        default=None,
        description="The password made up for the user, shown this once; null when you gave one",
    )


class NewUser(BaseModel):
    """Also what `flask sit create-user` checks its arguments against."""

    model_config = ConfigDict(extra="forbid")

    username: Username
    email: EmailAddress
    first_name: Line = ""
    last_name: Line = ""
    password: NewPassword | None = Field(
        default=None, description="At least 8 characters; made up (and answered) when left out"
    )
    is_admin: Flag = False


class MePatch(BaseModel):
    """Only the fields given change; none may be null, any other field is an error."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)

    first_name: Line | SkipJsonSchema[None] = None
    last_name: Line | SkipJsonSchema[None] = None
    email: EmailAddress | SkipJsonSchema[None] = None
    notify_assignments: Flag | SkipJsonSchema[None] = Field(
        default=None, description="Email me when an issue is assigned to me"
    )
    notify_digest: Flag | SkipJsonSchema[None] = Field(
        default=None, description="Email me the digest of the issues assigned to me"
    )
    notify_comments: Flag | SkipJsonSchema[None] = Field(
        default=None, description="Email me the comments on the issues I watch"
    )

    _not_null = field_validator("*", mode="before")(refuse_null)


class UserPatch(MePatch):
    """What an admin may change of any user."""

    is_admin: Flag | SkipJsonSchema[None] = None
    active: Flag | SkipJsonSchema[None] = Field(
        default=None, description="false: the user can no longer sign in nor be assigned"
    )


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str
    new_password: NewPassword


class Credentials(BaseModel):
    """As JSON or a form; HTTP Basic credentials fill in what the body leaves out."""

    username: Line | None = None
    password: str | None = None


class TokenOut(Output):
    token: str
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int = Field(description="Seconds until the token expires")


class RunnerOut(Output):
    host: str
    pid: int
    since: Timestamp = Field(description="When it took over the jobs")


class WebhookCountsOut(Output):
    pending: int = Field(description="Webhook messages waiting to be delivered")
    retrying: int = Field(description="Pending messages with at least one failed attempt")
    overdue: int = Field(description="Pending messages due over 60 seconds ago, never tried")
    failed: int = Field(description="Messages given up on")


class DeliveryOut(Output):
    runner: RunnerOut | None = Field(
        description="The process that runs the jobs, on whichever host; null when none has been "
        "seen in the last 10 seconds"
    )
    pending: int = Field(description="Emails waiting to be sent")
    retrying: int = Field(description="Pending emails with at least one failed attempt")
    overdue: int = Field(description="Pending emails due over 60 seconds ago, never tried")
    failed: int = Field(description="Emails given up on")
    last_error: str | None = Field(
        description="The latest failed attempt's error, while any email is retrying"
    )
    webhooks: WebhookCountsOut


class HealthOut(Output):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="degraded: no runner, an email retrying or overdue, or a webhook message"
        " overdue"
    )
    database: Literal["ok", "unavailable"]
    delivery: DeliveryOut | None = Field(description="null when the database is unavailable")


class PageHeaders(BaseModel):
    link: str = Field(alias="Link", description="first, prev, next and last pages (RFC 8288)")
    x_total_count: int | SkipJsonSchema[None] = Field(
        default=None,
        alias="X-Total-Count",
        description="Items on all pages together; left out when more than 10,000 match",
    )


class IssueHeaders(BaseModel):
    etag: str = Field(alias="ETag", description="Changes whenever the issue changes")


class CreatedHeaders(IssueHeaders):
    location: str = Field(alias="Location", description="The new issue's URL")


class CommentHeaders(BaseModel):
    etag: str = Field(alias="ETag", description="Changes whenever the comment changes")


class CommentCreatedHeaders(CommentHeaders):
    location: str = Field(alias="Location", description="The new comment's URL")


class UserCreatedHeaders(BaseModel):
    location: str = Field(alias="Location", description="The new user's URL")


# Webhooks (§14): the types of message a webhook may want (`sit.webhooks.messages.TYPES`), or
# "*" for all of them.
WebhookType = Literal[
    "*",
    "issue.created",
    "issue.updated",
    "issue.deleted",
    "comment.created",
    "comment.updated",
    "comment.deleted",
]
WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=2000),
    *matching(r"^https?://[^\s\x00]+$", "must be an absolute http:// or https:// URL"),
]
WebhookSecret = Annotated[
    str,
    *matching(
        r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$",
        "must be whsec_ and 24 to 64 bytes in base64 (Standard Webhooks)",
    ),
]
Events = Annotated[list[WebhookType], Field(min_length=1, max_length=10)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: Events = Field(default=["*"], description='Message types, or ["*"] for all')
    active: Flag = True
    description: Description = ""
    secret: WebhookSecret | None = Field(
        default=None, description="Write-only; made up (and answered this once) when left out"
    )


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)

    url: WebhookUrl | SkipJsonSchema[None] = None
    events: Events | SkipJsonSchema[None] = None
    active: Flag | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    secret: WebhookSecret | SkipJsonSchema[None] = Field(default=None, description="Write-only")

    _not_null = field_validator("*", mode="before")(refuse_null)


class WebhookOut(Output):
    id: int
    url: str
    events: list[str]
    active: bool
    description: str
    created_at: Timestamp
    updated_at: Timestamp
    failing_since: Timestamp | None = Field(
        description="The first failed delivery since the last one that succeeded"
    )
    disabled_reason: str | None = Field(description="Why SIT deactivated the webhook, if it did")


class NewWebhookOut(WebhookOut):
    secret: str = Field(description="The signing secret, shown this once")


class WebhookCreatedHeaders(BaseModel):
    location: str = Field(alias="Location", description="The new webhook's URL")


class WebhookDeliveryOut(Output):
    """One attempt to deliver a message."""

    id: int
    message_id: str = Field(description="The message's webhook-id, the same on every attempt")
    type: str
    attempt: int
    state: Literal["delivered", "failed"]
    message_state: Literal["pending", "delivered", "failed"] = Field(
        description="The message's: pending (another attempt is due), delivered or failed",
    )
    response_status: int | None
    duration: float = Field(description="Seconds")
    error: str | None
    started_at: Timestamp


class WebhookDeliveryDetailOut(WebhookDeliveryOut):
    request_headers: dict[str, str]
    request_body: str
    response_body: str | None = Field(description="Its first 4 KiB")


class QueuedOut(Output):
    message_id: str = Field(validation_alias="msg_id", description="Its webhook-id")
    type: str
    state: str


class LabelCreatedHeaders(BaseModel):
    location: str = Field(alias="Location", description="The new label's URL")
