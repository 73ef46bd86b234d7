"""Per-customer order and paused destinations: deliveries gain an order key, a new table holds pauses.

A delivery to a destination whose ``ordering`` is ``"customer"`` carries the customer's number
as ``order_key`` and the call's time as ``order_at``; a claim skips it while an earlier delivery
with the same destination and key is unfinished, so two calls from one new number never race to
create two contacts. ``paused_destinations`` names each destination an operator paused (and
when): its deliveries are not claimed until it is resumed. The rows already stored get no order
key (they are delivered as before); no destination starts paused.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("order_key", sa.String(100)))
        batch.add_column(sa.Column("order_at", sa.DateTime))
        batch.create_index("ix_deliveries_order", ["destination", "order_key"])
    op.create_table(
        "paused_destinations",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("paused_at", sa.DateTime, nullable=False),
    )
