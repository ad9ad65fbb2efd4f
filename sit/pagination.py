"""Paging a listing: a plain JSON array, with `Link` and `X-Total-Count` headers.

`next` and `prev` carry a cursor: the sort key of the row a page ends (or starts) at, signed, so
the page after any page is an index range that costs what the first page does. `page=` (an
offset) keeps working, at an offset's cost.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import current_app, request
from itsdangerous import BadSignature
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable
from sqlalchemy.sql.visitors import InternalTraversal

from sit import errors, signing
from sit.extensions import db
from sit.schemas import PageQuery

COUNT_CAP = 10_000  # more matches than this and X-Total-Count (and `last`) is left out
# PostgreSQL: a listing its planner expects this many times COUNT_CAP in is not counted (§7: the
# count may go above COUNT_CAP). Each condition's share of the rows comes from ANALYZE's sample
# of 30,000 rows (a share of 1 % is measured within 6 %); the planner multiplies them as if
# independent, and is off only where conditions are correlated: here by more than a factor of
# 5, which seed-demo's data (independent) measured within 5 %.
FAR_MORE = 5
NEXT, PREV = "n", "p"
SALT = "sit.cursor"


@dataclass(frozen=True)
class Order:
    """A listing's order: its key columns, the last one unique (the id), all one direction."""

    name: str  # "created.desc": a cursor made for another order is refused
    columns: tuple[sa.ColumnElement[Any], ...]
    descending: bool

    def by(self, backward: bool = False) -> list[sa.ColumnElement[Any]]:
        """ORDER BY, or its reverse to walk back from a cursor."""
        order = sa.desc if self.descending != backward else sa.asc
        return [order(column) for column in self.columns]

    def beyond(self, key: list[Any], backward: bool) -> sa.ColumnElement[bool]:
        """The rows after the row with this key, in this order (or before it, backward)."""
        values = zip(self.columns, key, strict=True)
        boundary = sa.tuple_(*(sa.bindparam(None, value, c.type) for c, value in values))
        rows = sa.tuple_(*self.columns)
        return rows < boundary if self.descending != backward else rows > boundary


@dataclass(frozen=True)
class Cursor:
    rel: str  # NEXT: the rows after `key`; PREV: those before it
    key: list[Any]


def write_cursor(order: Order, rel: str, row: sa.Row[Any]) -> str:
    key = [row._mapping[column.key] for column in order.columns]
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    return signing.serializer(SALT).dumps([order.name, rel, *values])


def read_cursor(text: str, order: Order) -> Cursor:
    """The cursor a `next` or `prev` link of this listing carries.

    :raise 400: it is not one SIT signed, or it was made for another order.
    """
    try:
        name, rel, *values = signing.serializer(SALT).loads(text)
        if name != order.name or rel not in (NEXT, PREV):
            raise ValueError
        types = [column.type.python_type for column in order.columns]
        key = [
            datetime.fromisoformat(v) if t is datetime else t(v)
            for t, v in zip(types, values, strict=True)
        ]
    except (BadSignature, ValueError, TypeError):
        errors.invalid({"cursor": ["not a cursor of this listing: follow a Link header's"]})
    return Cursor(rel, key)


@dataclass(frozen=True)
class Page:
    """One page of a listing, and where the others are: URLs by relation (first, prev, next,
    last) and the count of every page's rows, when known."""

    rows: list[sa.Row[Any]]
    links: dict[str, str]
    total: int | None

    def headers(self) -> dict[str, str]:
        """`Link` and, when the count is known, `X-Total-Count`."""
        headers = {} if self.total is None else {"X-Total-Count": str(self.total)}
        links = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in self.links.items())
        return headers | {"Link": links}


def paginate(
    select: sa.Select[Any],
    query: PageQuery,
    order: Order,
    count: Callable[[], int | None] | None = None,
) -> tuple[list[sa.Row[Any]], dict[str, str]]:
    """One page of the rows of an unexecuted query, in `order`, and the headers that say where
    the others are (`page_of`'s, for an API answer)."""
    page = page_of(select, query, order, count)
    return page.rows, page.headers()


def page_of(
    select: sa.Select[Any],
    query: PageQuery,
    order: Order,
    count: Callable[[], int | None] | None = None,
) -> Page:
    """One page of the rows of an unexecuted query, in `order`, and where the others are. A page
    past the last one is empty. `count`, if given, counts the rows as `capped_count` would,
    only faster.

    :raise 400: `cursor` is not one of this listing's, or comes with `page`.
    """
    if query.cursor is not None and "page" in query.model_fields_set:
        errors.invalid({"cursor": ["give either cursor or page, not both"]})
    cursor = read_cursor(query.cursor, order) if query.cursor is not None else None
    backward = cursor is not None and cursor.rel == PREV
    offset = 0 if cursor else (query.page - 1) * query.per_page
    page = select.order_by(*order.by(backward)).limit(query.per_page + 1).offset(offset)
    if cursor:
        page = page.where(order.beyond(cursor.key, backward))
    connection = db.session.connection()  # Core statements: no ORM objects to build
    rows = connection.execute(page).all()
    more = len(rows) > query.per_page  # in the direction walked
    rows = rows[: query.per_page][::-1] if backward else rows[: query.per_page]
    if not cursor and not more and (rows or offset == 0):
        total: int | None = offset + len(rows)  # this page ends the listing: no count needed
    else:
        total = capped_count(select) if count is None else count()
    last = max(math.ceil(total / query.per_page), 1) if total is not None else None
    links = {"first": page_url(page=1)}
    if rows and (more if backward else bool(cursor or offset)):
        links["prev"] = page_url(cursor=write_cursor(order, PREV, rows[0]))
    elif offset and not rows:  # past the end of the listing, by page number
        links["prev"] = page_url(page=min(query.page - 1, last or query.page))
    if rows and (more or backward):
        links["next"] = page_url(cursor=write_cursor(order, NEXT, rows[-1]))
    if last is not None:
        links["last"] = page_url(page=last)
    return Page(rows, links, total)


def capped_count(
    select: sa.Select[Any], sample: Callable[[float], bool] | None = None
) -> int | None:
    """How many rows the query has, or None when more than COUNT_CAP: counting stops there, so
    a count costs at most what it costs on a small tracker. PostgreSQL: None, uncounted, when
    its planner expects FAR_MORE times COUNT_CAP rows (counting 10,001 of a rare combination
    of conditions tests many more rows), or more than COUNT_CAP and `sample`, given that
    estimate, says more too."""
    planned = planned_rows(select)
    if planned >= FAR_MORE * COUNT_CAP or (planned > COUNT_CAP and sample and sample(planned)):
        return None
    total = count_up_to(select, COUNT_CAP + 1)
    return total if total <= COUNT_CAP else None


class Explain(Executable, ClauseElement):
    """PostgreSQL's plan of a query, `EXPLAIN (FORMAT JSON)`, compiled once per shape of query
    as the query itself is (SQLAlchemy's statement cache; its cache key is the query's).
    Compiling the listing's query anew for each plan took 2.3 of the 9 ms that PostgreSQL's
    first page of 10,000 issues took (in process, `README.md`, at scale)."""

    inherit_cache = True
    _traverse_internals = [("query", InternalTraversal.dp_clauseelement)]

    def __init__(self, query: sa.Select[Any]) -> None:
        self.query = query


@compiles(Explain)
def _explain(explain: Explain, compiler: Any, **kw: Any) -> str:
    text = f"EXPLAIN (FORMAT JSON) {compiler.process(explain.query, **kw)}"
    # Its rows are the plan's, not the query's columns: no result map, as for a text statement
    # (ext.compiler has no public way to say so for a construct that wraps a SELECT).
    compiler._result_columns = []
    return text


def planned_rows(select: sa.Select[Any]) -> float:
    """PostgreSQL: how many rows its planner expects the query to have (0 on SQLite, which
    has no such estimate)."""
    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        return 0
    return connection.execute(Explain(select)).scalar_one()[0]["Plan"]["Plan Rows"]


def count_up_to(select: sa.Select[Any], cap: int) -> int:
    """How many rows the query has, reading no further than `cap` of them."""
    ones = select.with_only_columns(sa.literal(1), maintain_column_froms=True).order_by(None)
    count = sa.select(sa.func.count()).select_from(ones.limit(cap).subquery())
    return db.session.connection().execute(count).scalar_one()


def page_url(**arg: str | int) -> str:
    """This request's URL under `PUBLIC_URL` (never the Host header), at another page."""
    args = {k: v for k, v in request.args.items() if k not in ("page", "cursor")} | arg
    return f"{current_app.config['PUBLIC_URL']}{request.path}?{urlencode(args)}"
