"""Xero's tables in the warehouse: the encrypted refresh token, the ledger of what was pushed,
and the nightly reconciliation's findings."""

import sqlalchemy as sa

from resources.halo_tables import ENTRY_KEY
from resources.tables import TABLES

# Xero. The refresh token is kept apart from the sync tables and encrypted (resources/xero.py).
xero_tokens = sa.Table(
    "xero_tokens",
    TABLES,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("refresh_token", sa.Text, nullable=False, comment="Fernet-encrypted with XERO_TOKEN_KEY"),
    sa.Column("rotated_at", sa.DateTime, nullable=False, comment="when Xero last issued it"),
    sa.Column("locked_at", sa.DateTime, comment="last refresh attempt (the row lock serialises refreshes)"),
    sa.Column("refused_at", sa.DateTime, comment="set when Xero refused the token: an operator must reconnect"),
    sa.Column("refusal", sa.Text),
)

xero_ledger = sa.Table(
    "xero_ledger",
    TABLES,
    sa.Column("entry_key", ENTRY_KEY, primary_key=True, comment="the Halo entry's key (halo_time_entries.entry_key)"),
    sa.Column("halo_entry_id", sa.Integer, comment="the numeric id the row was keyed by before entry keys"),
    sa.Column("ticket_key", sa.String(40)),
    sa.Column("fingerprint", sa.String(32)),
    sa.Column("marker", ENTRY_KEY, comment="the key in the Xero description's [halo <key>] marker"),
    sa.Column("work_date", sa.Date, nullable=False),
    sa.Column("agent_id", sa.Integer),
    sa.Column("status", sa.String(16), nullable=False,
              comment="pending | pushed | deleted | invalid | conflict | failed | postponed | deferred"),
    sa.Column("xero_time_entry_id", sa.String(64)),
    sa.Column("xero_project_id", sa.String(64)),
    sa.Column("content_hash", sa.String(32), comment="of the content Xero holds, as last pushed or seen"),
    sa.Column("idempotency_key", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("pushed_at", sa.DateTime),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_xero_ledger_day", "work_date"),
)

xero_findings = sa.Table(
    "xero_findings",
    TABLES,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("xero_time_entry_id", sa.String(64), primary_key=True, comment="empty when Xero has none"),
    sa.Column("entry_key", ENTRY_KEY, primary_key=True, comment="empty when Halo has none"),
    sa.Column("work_date", sa.Date),
    sa.Column("detail", sa.Text),
    sa.Column("found_at", sa.DateTime, nullable=False),
)
