"""Paging a listing: a plain JSON array, with `Link` and `X-Total-Count` headers."""

from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import current_app, request

from sit.extensions import db
from sit.schemas import PageQuery


def paginate(select: sa.Select[Any], query: PageQuery) -> tuple[list[Any], dict[str, str]]:
    """One page of an unexecuted query, and the headers that say where the others are."""
    page = db.paginate(
        select, page=query.page, per_page=query.per_page, max_per_page=100, error_out=False
    )
    last = max(page.pages, 1)
    targets = {"first": 1}
    if page.page > 1:
        targets["prev"] = min(page.page - 1, last)
    if page.page < last:
        targets["next"] = page.page + 1
    targets["last"] = last
    links = [f'<{page_url(number)}>; rel="{rel}"' for rel, number in targets.items()]
    return list(page.items), {"Link": ", ".join(links), "X-Total-Count": str(page.total)}


def page_url(number: int) -> str:
    """This request's URL under `PUBLIC_URL` (never the Host header), at another page."""
    args = request.args.to_dict()
    args["page"] = str(number)
    return f"{current_app.config['PUBLIC_URL']}{request.path}?{urlencode(args)}"
