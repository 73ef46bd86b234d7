"""status-update (and tool-calls) events are distinct events: the identity gains ``event_key``.

One call sends several status-updates (``in-progress``, then ``ended`` or ``ended-with-error``)
and several tool-calls, all with the same call id. Under 0001's unique key (source, call id,
event) the second was answered ``duplicate`` and dropped. ``event_key`` is what tells one such
event from another: the call status of a status-update, the tool call ids of a tool-calls event,
empty for the others. The same event sent twice still has the same key: still a duplicate.

The rows already stored get their key from their own JSON, by the rule the HMS source uses
today (written out here, not imported: a migration must mean the same thing forever).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 500


def _key(event: str, data: dict) -> str:
    if event == "status-update":
        return (data.get("call") or {}).get("status") or ""
    if event == "tool-calls":
        calls = ((data.get("raw") or {}).get("message") or {}).get("tool_call_list") or []
        key = ",".join(sorted(str(c.get("id", "")) for c in calls if isinstance(c, dict)))
        return key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return ""


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("event_key", sa.String(255), nullable=False, server_default=""))
        batch.drop_constraint("uq_reports_source_call_event", type_="unique")
        batch.create_unique_constraint("uq_reports_identity", ["source", "call_id", "event", "event_key"])
    reports = sa.table("reports", sa.column("id", sa.String), sa.column("event", sa.String),
                       sa.column("data", sa.Text), sa.column("event_key", sa.String))
    conn = op.get_bind()
    last = ""
    while True:
        rows = conn.execute(sa.select(reports.c.id, reports.c.event, reports.c.data)
                            .where(reports.c.event.in_(["status-update", "tool-calls"]), reports.c.id > last)
                            .order_by(reports.c.id).limit(_BATCH)).all()
        if not rows:
            break
        for report_id, event, data in rows:
            key = _key(event, json.loads(data))
            if key:
                conn.execute(reports.update().where(reports.c.id == report_id).values(event_key=key))
        last = rows[-1].id
