"""Dashboard sessions that end: one row per login, deleted at logout, with an absolute expiry.

The dashboard's cookie used to be the whole session (signed, stateless): a copy kept working
after logout until it expired. Now the cookie carries a random session id and the store keeps
its SHA-256 (never the id itself) and when it ends; a page is served only while the row exists
and has not expired. A new table: the rows already stored are not touched.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_admin_sessions_expires_at", "admin_sessions", ["expires_at"])
