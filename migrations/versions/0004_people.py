"""People: admins, deactivated users and email preferences; the first user becomes an admin.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = {  # existing users get the server default
    "is_admin": sa.false(),
    "active": sa.true(),
    "notify_assignments": sa.true(),
    "notify_digest": sa.true(),
}

users = sa.table(
    "users",
    sa.column("id", sa.Integer),
    sa.column("username", sa.String),
    sa.column("email", sa.String),
    sa.column("is_admin", sa.Boolean),
)


def first_user() -> sa.ScalarSelect[int]:
    """The user `flask sit first-user` made (`admin`, `admin@localhost`), else the oldest."""
    made_by_first_user = (users.c.username == "admin") & (users.c.email == "admin@localhost")
    return (
        sa.select(users.c.id)
        .order_by(sa.case((made_by_first_user, 0), else_=1), users.c.id)
        .limit(1)
        .scalar_subquery()
    )


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, never SQLite's batch copy of `users`: that drops the table,
    # which the issues' foreign keys refuse once an install has issues.
    for name, default in COLUMNS.items():
        op.add_column(
            "users", sa.Column(name, sa.Boolean(), nullable=False, server_default=default)
        )
    op.execute(users.update().where(users.c.id == first_user()).values(is_admin=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
