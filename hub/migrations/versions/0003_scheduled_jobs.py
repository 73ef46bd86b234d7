"""Scheduled jobs run once across every process: a lease per job, and its last run's outcome.

The running hub reconciles with the platform's calls API on a schedule
(``[sources.hms.reconcile]``). Every dispatcher process (embedded workers, Celery workers, on
any node) offers to run it; the one that takes the row's lease runs it, the others find it
taken or not yet due. ``last_result`` keeps the run's counts (JSON) for the dashboard and
``/metrics``. A new table: the rows already stored are not touched.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduled_jobs",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("last_started_at", sa.DateTime),
        sa.Column("last_finished_at", sa.DateTime),
        sa.Column("last_result", sa.Text),
    )
