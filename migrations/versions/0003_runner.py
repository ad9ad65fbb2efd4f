"""The runner's heartbeat row, and when an email's last error happened.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    runner = op.create_table(
        "runner",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("since", sa.DateTime(), nullable=True),
        sa.Column("seen_at", sa.DateTime(), nullable=True),
    )
    op.bulk_insert(runner, [{"id": 1}])  # the one row, so a heartbeat is always an UPDATE
    op.add_column("outbox", sa.Column("last_error_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as outbox:  # SQLite drops a column by copying the table
        outbox.drop_column("last_error_at")
    op.drop_table("runner")
