"""Xero's tables in the warehouse: the encrypted refresh token, the ledger of what was pushed,
and the nightly reconciliation's findings."""

import sqlalchemy as sa

from resources.halo_tables import copy_numeric_keyed, free_key, halo_time_entries, retire_numeric_keyed, zero_keyed
from resources.tables import ENTRY_KEY, TABLES, UPGRADES, Upgrade

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
    sa.Column("marker", ENTRY_KEY, comment="the key in the Xero description's `[halo <key>]` marker"),
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

tables = (xero_tokens, xero_ledger, xero_findings)


# -- upgrades of older warehouses (resources/halo_tables.py upgrades the entries first) -------
def _ledger_keyed(conn: sa.Connection, retired: bool) -> None:
    """The ledger of before entry keys, copied under `#<id>` with its marker; a row learns its
    entry's other keys from the entry as the warehouse holds it."""
    if not retired:
        return
    copy_numeric_keyed(conn, xero_ledger, "halo_entry_id", {"halo_entry_id": "halo_entry_id", "marker": "'#' || CAST(halo_entry_id AS VARCHAR)"})
    entries = halo_time_entries
    known = {r.halo_id: r for r in conn.execute(sa.select(entries.c.halo_id, entries.c.ticket_key, entries.c.fingerprint))}
    updates = [{"key": f"#{i}", "ticket": known[i].ticket_key, "print": known[i].fingerprint}
               for i in conn.execute(sa.select(xero_ledger.c.halo_entry_id)).scalars() if i in known]
    if updates:
        conn.execute(xero_ledger.update().where(xero_ledger.c.entry_key == sa.bindparam("key"))
                     .values(ticket_key=sa.bindparam("ticket"), fingerprint=sa.bindparam("print")), updates)


def _zero_keyed_ledger_rekeyed(conn: sa.Connection, _state: None) -> None:
    """Ledger rows keyed from zero-filled ids take their entry's fingerprint, which the ledger kept
    as pushed, and keep their marker, so Xero's entry is recognised: nothing is pushed twice or
    orphaned, and what should never have gone (a break on client 0) is deleted by the next push of
    its day."""
    ledger = conn.execute(sa.select(xero_ledger.c.entry_key, xero_ledger.c.fingerprint).where(zero_keyed(xero_ledger))
                          .order_by(xero_ledger.c.entry_key)).all()
    taken: set[str] = set()
    for old_key, printed in ledger:
        new_key = free_key(printed or old_key.replace("t", "x", 1), taken, conn, xero_ledger)
        conn.execute(xero_ledger.update().where(xero_ledger.c.entry_key == old_key)
                     .values(entry_key=new_key, ticket_key=None, marker=sa.func.coalesce(xero_ledger.c.marker, old_key)))


UPGRADES += [
    Upgrade("xero_ledger: numeric ids to entry keys", before=lambda conn: retire_numeric_keyed(conn, "xero_ledger", "halo_entry_id"),
            after=_ledger_keyed),
    # Rebuilt every night: nothing to keep.
    Upgrade("xero_findings: numeric ids to entry keys",
            before=lambda conn: retire_numeric_keyed(conn, "xero_findings", "halo_entry_id", keep=False)),
    Upgrade("xero_ledger: zero-filled keys to fingerprints", after=_zero_keyed_ledger_rekeyed),
]
