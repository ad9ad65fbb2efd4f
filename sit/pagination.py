"""Paging a listing: a plain JSON array, with `Link` and `X-Total-Count` headers."""

import math
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import current_app, request

from sit.extensions import db
from sit.schemas import PageQuery


def paginate(select: sa.Select[Any], query: PageQuery) -> tuple[list[sa.Row[Any]], dict[str, str]]:
    """One page of the rows of an unexecuted query, and the headers that say where the others
    are. A page past the last one is empty."""
    connection = db.session.connection()  # Core statements: no ORM objects to build
    count = select.with_only_columns(sa.func.count(), maintain_column_froms=True).order_by(None)
    total = connection.execute(count).scalar_one()
    offset = (query.page - 1) * query.per_page
    rows = connection.execute(select.limit(query.per_page).offset(offset)).all()
    last = max(math.ceil(total / query.per_page), 1)
    targets = {"first": 1}
    if query.page > 1:
        targets["prev"] = min(query.page - 1, last)
    if query.page < last:
        targets["next"] = query.page + 1
    targets["last"] = last
    links = [f'<{page_url(number)}>; rel="{rel}"' for rel, number in targets.items()]
    return rows, {"Link": ", ".join(links), "X-Total-Count": str(total)}


def page_url(number: int) -> str:
    """This request's URL under `PUBLIC_URL` (never the Host header), at another page."""
    args = request.args.to_dict()
    args["page"] = str(number)
    return f"{current_app.config['PUBLIC_URL']}{request.path}?{urlencode(args)}"
