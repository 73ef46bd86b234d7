"""What the hub answered: one row per answered assistant-request or tool-calls event.

The hub now answers these events live (docs/answers.md); each answer is kept beside its report
with its outcome (answered, fallback, error), the JSON sent back and how long it took, for the
report page's story of a call and for the operator. A new table: the rows already stored are
not touched (the events stored before this revision simply have no answer).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "answers",
        sa.Column("report_id", sa.String(36), sa.ForeignKey("reports.id"), primary_key=True),
        sa.Column("event", sa.String(50), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("answered_at", sa.DateTime, nullable=False),
        sa.Column("detail", sa.Text),
    )
