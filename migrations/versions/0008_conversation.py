"""The conversation on an issue: comments, its history (events), labels and watchers; the
`comments` count and `notify_comments`; failed logins remember the client's address (the
per-address throttle against password spraying).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def cascading(name: str, table: str, primary_key: bool = False) -> sa.Column:
    """A column naming a row of `table`, deleted with it."""
    foreign_key = sa.ForeignKey(f"{table}.id", ondelete="CASCADE")
    return sa.Column(name, sa.Integer(), foreign_key, nullable=False, primary_key=primary_key)


def user_column(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), sa.ForeignKey("users.id"), nullable=False, index=True)


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, never SQLite's batch copy (see 0004).
    op.add_column(
        "users",
        sa.Column("notify_comments", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column(
        "issues", sa.Column("comment_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("login_failures", sa.Column("address", sa.String(45), nullable=True))
    op.create_index(
        "ix_login_failures_address_failed_at", "login_failures", ["address", "failed_at"]
    )
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), primary_key=True),
        cascading("issue_id", "issues"),
        user_column("author_id"),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Index("ix_comments_issue_id_id", "issue_id", "id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        cascading("issue_id", "issues"),
        user_column("actor_id"),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Index("ix_events_issue_id_id", "issue_id", "id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("folded", sa.String(50), nullable=False, unique=True),
        sa.Column("color", sa.String(7), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
    )
    op.create_table(
        "issue_labels",
        cascading("issue_id", "issues", primary_key=True),
        cascading("label_id", "labels", primary_key=True),
        sa.Index("ix_issue_labels_label_id_issue_id", "label_id", "issue_id"),
    )
    op.create_table(
        "subscriptions",
        cascading("issue_id", "issues", primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), primary_key=True, index=True),
        sa.Column("ignored", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    for table in ("subscriptions", "issue_labels", "labels", "events", "comments"):
        op.drop_table(table)
    op.drop_index("ix_login_failures_address_failed_at", "login_failures")
    for table, column in (
        ("login_failures", "address"),
        ("issues", "comment_count"),
        ("users", "notify_comments"),
    ):
        op.drop_column(table, column)  # SQLite 3.35+ drops a column in place, keeping the rest
