"""The outbox, and APScheduler's job table (created here, so workers never race to create it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("recipient_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("to_address", sa.String(254), nullable=False),
        sa.Column(
            "issue_id",
            sa.Integer(),
            sa.ForeignKey("issues.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False, unique=True),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failing_since", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outbox_state_due_at", "outbox", ["state", "due_at"])
    op.create_index("ix_outbox_recipient_id", "outbox", ["recipient_id"])
    op.create_index("ix_outbox_issue_id", "outbox", ["issue_id"])
    # The shape SQLAlchemyJobStore (APScheduler 3) creates; see migrations/env.py. SIT's job
    # store leaves its table to this migration (`sit.scheduler.MigratedJobStore`), but the
    # workers of earlier releases made it themselves when started before `flask db upgrade`:
    # kept as they left it, jobs included.
    if not sa.inspect(op.get_bind()).has_table("apscheduler_jobs"):
        op.create_table(
            "apscheduler_jobs",
            sa.Column("id", sa.Unicode(191), primary_key=True),
            sa.Column("next_run_time", sa.Float(25), nullable=True),
            sa.Column("job_state", sa.LargeBinary(), nullable=False),
        )
        op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    op.drop_table("apscheduler_jobs")
    op.drop_table("outbox")
