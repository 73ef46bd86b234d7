"""Erasures: a record that one person's data was erased, without the number or any content.

``sovereign-hub forget`` and ``DELETE /api/customers/<number>`` delete every report, event,
delivery and attempt of one caller; what stays is this row: when, by whom (cli, api or
dashboard), how many rows of each table went, and each destination's erasure outcome (names
and outcomes only). A new table: the rows already stored are not touched.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("erased_at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(20), nullable=False),
        sa.Column("reports", sa.Integer, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("destinations", sa.Text, nullable=False, server_default="{}"),
    )
