"""`/healthz`: can this process reach its database."""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint
from sqlalchemy.exc import SQLAlchemyError

from sit.extensions import db
from sit.schemas import HealthOut

bp = APIBlueprint("health", __name__, tag="Health")


@bp.get("/healthz")
@bp.output(HealthOut)
@bp.doc(responses={503: "The database is unreachable"})
def health() -> Any:
    """Report whether the database answers; no token needed."""
    try:
        db.session.execute(sa.text("SELECT 1"))
    except SQLAlchemyError:
        return {"status": "unavailable", "database": "unavailable"}, 503
    return {"status": "ok", "database": "ok"}
