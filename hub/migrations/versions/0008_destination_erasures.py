"""Destination erasures: one queued erasure of one caller at one destination, run by the hub.

``forget --destinations`` (and the API and dashboard) queue a row per enabled destination whose
type can erase; the running hub claims each row under a lease (once across processes and
nodes), calls the destination's ``forget`` and retries it on ``[dispatch] retry_delays`` up to
``max_attempts``, like a delivery. ``subject`` holds the caller's E.164 number only while the row
is pending or running: the attempt that ends it (succeeded or dead) sets it to NULL in the same
UPDATE. ``attempt_log`` is JSON, one entry per attempt: when, how long, outcome and the
scrubbed error. A new table: the rows already stored are not touched.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destination_erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("erasure_id", sa.Integer, sa.ForeignKey("erasures.id"), nullable=False, index=True),
        sa.Column("destination", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(32)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime, nullable=False),
        sa.Column("lease_owner", sa.String(100)),
        sa.Column("lease_until", sa.DateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("attempt_log", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Index("ix_destination_erasures_due", "status", "next_attempt_at"),
    )

