"""Labels: everyone reads them, admins manage them; an issue carries a set of them, by name
(ignoring case), set by whoever may edit the issue; the listing filters by them (`having`)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from apiflask import APIBlueprint, abort
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from sit import errors, search
from sit.extensions import db, token_auth
from sit.models import Issue, Label, get_or_404, issue_labels
from sit.pagination import Order, capped_count, paginate
from sit.schemas import (
    LabelCreatedHeaders,
    LabelIn,
    LabelOut,
    LabelPatch,
    PageHeaders,
    PageQuery,
    label_url,
)

bp = APIBlueprint("labels", __name__, tag="Labels", url_prefix="/api/labels")

NO_LABEL = "none"  # `?label=none`: issues without any label; no label may be named so
BY_NAME = Order("name", (Label.folded,), descending=False)
LISTED = (Label.id, Label.name, Label.folded, Label.color, Label.description)
ADMINS_ONLY = {403: "Only admins manage labels"}
CHANGE_ERRORS = {**ADMINS_ONLY, 409: "Another label has this name (ignoring case)"}


def named(names: list[str]) -> list[Label]:
    """The labels with these names, ignoring case.

    :raise 400: a name is no label's.
    """
    if not names:
        return []
    folded = {name.casefold(): name for name in names}
    found = list(db.session.scalars(sa.select(Label).where(Label.folded.in_(folded))))
    unknown = set(folded) - {label.folded for label in found}
    if unknown:
        missing = ", ".join(sorted(folded[name] for name in unknown))
        errors.invalid({"labels": [f"no label is named {missing}"]})
    return found


def resolve(fields: dict[str, Any]) -> dict[str, Any]:
    """An issue's writable fields with `labels`, if given, as the labels they name.

    :raise 400: a name is no label's.
    """
    return fields | {"labels": named(fields["labels"])} if "labels" in fields else fields


class JSONFunction(FunctionElement[Any]):
    """A JSON function whose SQL each database spells its own way (`sql`, by dialect)."""

    type = sa.JSON()
    inherit_cache = True
    sql: ClassVar[dict[str, str]]


class json_list(JSONFunction):
    """Values aggregated into one JSON array (`[]` for none)."""

    inherit_cache = True
    sql = {"sqlite": "json_group_array({})", "postgresql": "coalesce(json_agg({}), '[]'::json)"}


class json_pair(JSONFunction):
    """Two values as a JSON array."""

    inherit_cache = True
    sql = {"sqlite": "json_array({})", "postgresql": "json_build_array({})"}


@compiles(JSONFunction)
def _json_function(element: JSONFunction, compiler: Any, **kw: Any) -> str:
    return element.sql[compiler.dialect.name].format(compiler.process(element.clauses, **kw))


# An issue's labels' names, read in the issue's own statement (`sit.issues.LISTED`): a query of
# their own for each answer was 9 % of a GET's instructions, 8 % of a list's and of a patch's
# (callgrind, `bench/instructions.py`).
NAMES = (
    sa.select(json_list(Label.name))
    .select_from(Label)
    .join(issue_labels)
    .where(issue_labels.c.issue_id == Issue.id)
    .scalar_subquery()
)
# Their names and colors, as pairs, for an issue's page (`sit.web.conversation.ISSUE`).
CHIPS = (
    sa.select(json_list(json_pair(Label.name, Label.color)))
    .select_from(Label)
    .join(issue_labels)
    .where(issue_labels.c.issue_id == Issue.id)
    .scalar_subquery()
)
NAMES_OF_ONE = sa.select(NAMES).where(Issue.id == sa.bindparam("pk"))


def names_of(pk: int) -> list[str]:
    """The names of the labels of this issue."""
    return db.session.connection().execute(NAMES_OF_ONE, {"pk": pk}).scalar_one()


@dataclass(frozen=True)
class Labelled:
    """The listing's `?label=` filters: each row's test of them; how many issues carry them
    (None: more than COUNT_CAP), counted in an index (None: the listing counts itself); the
    words the search index has for them (`facets`, migration 0011; none for a label that does
    not exist: `where` finds no issue)."""

    where: list[sa.ColumnElement[bool]]
    count: Callable[[], int | None] | None = None
    facets: tuple[str, ...] = ()


def having(names: list[str]) -> Labelled:
    """Issues with each of these labels (an unknown one: no issue), or, for `none`, without
    any label, as far as X-Total-Count needs: one label alone in its index, several (or none)
    in PostgreSQL's `issues_words`, whose GIN index intersects their lists. On SQLite the
    search index walks the labels' lists of issues with the other filters' and the words'
    (`search.find`); PostgreSQL's planner chooses from its statistics."""
    if not names:
        return Labelled([])
    carries = sa.exists().where(issue_labels.c.issue_id == Issue.id)
    folded = {name.casefold() for name in names}
    wanted = folded - {NO_LABEL}
    ids = sorted(db.session.scalars(sa.select(Label.id).where(Label.folded.in_(wanted))))
    if len(ids) < len(wanted):
        return Labelled([sa.false()])  # the listing counts its none
    none = NO_LABEL in folded
    where = [carries.where(issue_labels.c.label_id == pk) for pk in ids]
    where += [~carries] if none else []
    facets = tuple(search.facet("label", pk) for pk in [*ids, *([None] if none else [])])
    if len(facets) == 1 and not none:
        issues = sa.select(issue_labels.c.issue_id).where(issue_labels.c.label_id == ids[0])
        return Labelled(where, lambda: capped_count(issues), facets)
    # PostgreSQL's count (SQLite's search index finds labels with the other facets: `find`).
    return Labelled(where, lambda: search.count_words(search.lexemes(list(facets))), facets)


def require_admin() -> None:
    """:raise 403: the caller is not an admin."""
    if not token_auth.current_user.is_admin:
        abort(403, "Only admins create, change and delete labels.")


def save(label: Label) -> None:
    """Commit a new or changed label.

    :raise 400: it is named `none`, which `?label=none` means.
    :raise 409: another label has its name, ignoring case (the unique `folded` says so).
    """
    if label.folded == NO_LABEL:
        errors.invalid({"name": [f"{NO_LABEL!r} is the listing's word for no label"]})
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409, f"A label is named {label.name!r} already (ignoring case).")


def create(fields: dict[str, Any]) -> Label:
    """A new label (`LabelIn`'s fields), committed; the caller is an admin (API and pages).

    :raise 400: it is named `none`.  :raise 409: another label has its name.
    """
    label = Label(color=fields["color"], description=fields["description"])
    label.rename(fields["name"])
    db.session.add(label)
    save(label)
    return label


def change(label: Label, fields: dict[str, Any]) -> None:
    """Set the given fields (`LabelPatch`'s) and commit; the caller is an admin.

    :raise 400: it is named `none`.  :raise 409: another label has its name.
    """
    if "name" in fields:
        label.rename(fields.pop("name"))
    for name, value in fields.items():
        setattr(label, name, value)
    save(label)


@bp.get("/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[LabelOut], headers=PageHeaders)
def list_labels(query_data: PageQuery) -> Any:
    """List the labels, by name."""
    rows, headers = paginate(sa.select(*LISTED), query_data, BY_NAME)
    return rows, 200, headers


@bp.post("/")
@bp.auth_required(token_auth)
@bp.input(LabelIn, location="json_or_form")
@bp.output(LabelOut, status_code=201, headers=LabelCreatedHeaders)
@bp.doc(responses=CHANGE_ERRORS)
def create_label(json_or_form_data: LabelIn) -> Any:
    """Create a label (admins)."""
    require_admin()
    label = create(json_or_form_data.model_dump())
    return label, 201, {"Location": label_url(label.id)}


@bp.get("/<int:pk>/")
@bp.auth_required(token_auth)
@bp.output(LabelOut)
def get_label(pk: int) -> Label:
    """Get one label."""
    return get_or_404(Label, pk)


@bp.patch("/<int:pk>/")
@bp.auth_required(token_auth)
@bp.input(LabelPatch, location="json_or_form")
@bp.output(LabelOut)
@bp.doc(responses=CHANGE_ERRORS)
def update_label(pk: int, json_or_form_data: LabelPatch) -> Label:
    """Rename a label, or change its color or description (admins)."""
    require_admin()
    label = get_or_404(Label, pk)
    change(label, json_or_form_data.model_dump(exclude_unset=True))
    return label


@bp.delete("/<int:pk>/")
@bp.auth_required(token_auth)
@bp.output({}, status_code=204)
@bp.doc(responses=ADMINS_ONLY)
def delete_label(pk: int) -> Any:
    """Delete a label, and take it off every issue (admins)."""
    require_admin()
    db.session.delete(get_or_404(Label, pk))
    db.session.commit()
    return ""
