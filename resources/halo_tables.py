"""HaloPSA's tables in the warehouse: agents, the agent mappings, time entries, timesheets, and
what each synced date range last received."""

import re

import sqlalchemy as sa

from resources.halo import fingerprint, ticket_key
from resources.tables import ENTRY_KEY, TABLES, UPGRADES, RawJSON, Upgrade, synced_columns

halo_agents = sa.Table(
    "halo_agents",
    TABLES,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text),
    sa.Column("first_name", sa.Text),
    sa.Column("last_name", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("initials", sa.Text),
    sa.Column("team", sa.Text),
    sa.Column("job_title", sa.Text),
    sa.Column("is_disabled", sa.Boolean, nullable=False),
    *synced_columns(deleted="set when Halo no longer lists the agent"),
)

agent_mappings = sa.Table(
    "agent_mappings",
    TABLES,
    sa.Column("halo_agent_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("employee_number", sa.Text, comment="the person's employee number in Employes"),
    sa.Column("xero_user_id", sa.Text, comment="the person's user id in Xero"),
    sa.Column("note", sa.Text),
    sa.Column("line", sa.Integer, nullable=False, comment="line of the mapping file"),
    sa.Column("loaded_at", sa.DateTime, nullable=False),
)

# A time entry's key is its own (resources/halo.py, `entry_row`): `#<id>` where Halo shows a real
# id, else `t<ticket>.<action>`, else `f<fingerprint>` (`~2`, `~3` for identical twins).

halo_time_entries = sa.Table(
    "halo_time_entries",
    TABLES,
    sa.Column("entry_key", ENTRY_KEY, primary_key=True, comment="#(id), t(ticket_id).(action_number) or f(fingerprint)"),
    sa.Column("halo_id", sa.Integer, comment="the id Halo sent, when real (tenants that hide it send 0)"),
    sa.Column("ticket_key", sa.String(40), comment="`t<ticket_id>.<action_number>` for ticket time"),
    sa.Column("fingerprint", sa.String(32), comment="digest of the entry's own fields (resources/halo.py FINGERPRINT_FIELDS)"),
    sa.Column("fiscal_year", sa.String(16), nullable=False),
    sa.Column("agent_id", sa.Integer, nullable=False),
    sa.Column("work_date", sa.Date, nullable=False),
    sa.Column("start_at", sa.DateTime, nullable=False),
    sa.Column("end_at", sa.DateTime),
    sa.Column("minutes", sa.Integer, nullable=False, comment="time taken in whole minutes (Halo sends hours)"),
    sa.Column("hours_raw", sa.Text, comment="timetaken exactly as Halo sent it"),
    sa.Column("ticket_id", sa.Integer),
    sa.Column("action_number", sa.Integer),
    sa.Column("client_id", sa.Integer),
    sa.Column("client_name", sa.Text),
    sa.Column("contract_id", sa.Integer),
    sa.Column("site_id", sa.Integer),
    sa.Column("event_type", sa.Integer, comment="Halo's event_type: 0 work, 1 break"),
    sa.Column("time_kind", sa.String(8), comment="work, break, leave or other (resources/halo.py time_kind); only work goes to Xero"),
    sa.Column("break_type", sa.Integer, comment="Halo's break_type (1 short break, 2 lunch), when a break"),
    sa.Column("break_type_name", sa.Text),
    sa.Column("holiday_id", sa.Integer, comment="the leave (Halo Holiday) this time is, when leave"),
    sa.Column("charge_type_name", sa.Text),
    sa.Column("subject", sa.Text),
    sa.Column("note", sa.Text),
    sa.Column("charge_rate", sa.Text, comment="decimal as text, exactly as sent"),
    sa.Column("raw", RawJSON, comment="the entry exactly as Halo sent it"),
    *synced_columns(deleted="set when Halo no longer has the entry"),
    sa.Index("ix_halo_entries_work_date", "work_date"),
)

halo_timesheets = sa.Table(
    "halo_timesheets",
    TABLES,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("fiscal_year", sa.String(16), nullable=False),
    sa.Column("agent_id", sa.Integer, nullable=False),
    sa.Column("work_date", sa.Date, nullable=False),
    sa.Column("target_minutes", sa.Integer),
    sa.Column("actual_minutes", sa.Integer),
    sa.Column("approval_status", sa.Integer, comment="Halo's approvalstatus as sent (1 is taken as approved)"),
    sa.Column("approved", sa.Boolean, nullable=False),
    sa.Column("approved_by", sa.Integer),
    sa.Column("approved_by_text", sa.Text, comment="approvedby when Halo sent text, not a number"),
    sa.Column("approver", sa.Text),
    sa.Column("submitted_at", sa.DateTime),
    sa.Column("approval_problem", sa.Text, comment="what in the approval could not be read (then `approved` is not to be trusted)"),
    *synced_columns(),
    sa.Index("ix_halo_timesheets_agent_day", "agent_id", "work_date"),
)

halo_sync_ranges = sa.Table(
    "halo_sync_ranges",
    TABLES,
    sa.Column("fiscal_year", sa.String(16), primary_key=True),
    sa.Column("range_start", sa.Date, primary_key=True),
    sa.Column("range_end", sa.Date, primary_key=True),
    sa.Column("identity", sa.String(32), nullable=False, comment="how the last sync keyed the range's entries"),
    sa.Column("entries", sa.Integer, nullable=False, comment="entries the last sync of the range received"),
    sa.Column("synced_at", sa.DateTime, nullable=False),
)

tables = (halo_agents, agent_mappings, halo_time_entries, halo_timesheets, halo_sync_ranges)


# -- upgrades of older warehouses ------------------------------------------------------------
# From before entry keys, when time entries were keyed by Halo's numeric id: the old table is
# renamed `halo_time_entries_v1` (kept, for a look back; drop it by hand), the new one made, and
# the rows copied under the key `#<id>` with each entry's ticket key and fingerprint, so a tenant
# that turns out to hide its ids (`id = 0`) finds its entries under their new keys.
def retire_numeric_keyed(conn: sa.Connection, name: str, old_key: str, *, keep: bool = True) -> bool:
    """Rename (or, unless `keep`, drop) table `name` when it is still keyed by `old_key`."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(name):
        return False
    columns = {c["name"] for c in inspector.get_columns(name)}
    if "entry_key" in columns or old_key not in columns:
        return False
    for index in inspector.get_indexes(name):  # index names are per schema: free them for the new table
        conn.execute(sa.text(f'DROP INDEX IF EXISTS "{index["name"]}"'))
    if not keep:
        conn.execute(sa.text(f"DROP TABLE {name}"))
        return False
    primary = inspector.get_pk_constraint(name).get("name")
    conn.execute(sa.text(f"ALTER TABLE {name} RENAME TO {name}_v1"))
    if conn.dialect.name == "postgresql" and primary:  # its key's index name would clash with the new table's
        conn.execute(sa.text(f'ALTER TABLE {name}_v1 RENAME CONSTRAINT "{primary}" TO "{name}_v1_pkey"'))
    return True


def copy_numeric_keyed(conn: sa.Connection, table: sa.Table, old_key: str, extra: dict[str, str]) -> None:
    """Copy `<table>_v1` into `table`, keyed `#<old key>`, with `extra` columns (name: SQL value)."""
    old_columns = {c["name"] for c in sa.inspect(conn).get_columns(f"{table.name}_v1")}
    common = [c.name for c in table.columns if c.name in old_columns and c.name not in ("entry_key", old_key)]
    values = ", ".join([f"'#' || CAST({old_key} AS VARCHAR)", *extra.values(), *common])
    columns = ", ".join(["entry_key", *extra, *common])
    conn.execute(sa.text(f"INSERT INTO {table.name} ({columns}) SELECT {values} FROM {table.name}_v1"))


def _entries_keyed(conn: sa.Connection, retired: bool) -> None:
    if not retired:
        return
    copy_numeric_keyed(conn, halo_time_entries, "id", {"halo_id": "id"})
    rows = conn.execute(sa.select(halo_time_entries)).mappings().all()
    if rows:
        conn.execute(
            halo_time_entries.update().where(halo_time_entries.c.entry_key == sa.bindparam("key"))
            .values(ticket_key=sa.bindparam("ticket"), fingerprint=sa.bindparam("print")),
            [{"key": r["entry_key"], "ticket": ticket_key(r["ticket_id"], r["action_number"]), "print": fingerprint(r)} for r in rows],
        )


# From the keys of before "0 is absent": Halo sends time without a ticket with `ticket_id: 0,
# action_number: 0`, which the code before took for a ticket key, `t0.0`, told apart as `t0.0~2`,
# ... by position in one response, so one chunk's `t0.0~3` overwrote another's. Such entries are
# re-keyed once, when a process first opens the warehouse: their zero ids become NULL and their
# key their fingerprint (identical twins `~2`, ... in their old keys' order).
ZERO_IDS = ("ticket_id", "action_number", "client_id", "contract_id", "site_id")


def zero_keyed(table: sa.Table) -> sa.ColumnElement[bool]:
    key = table.c.entry_key
    return key.like("t0.%") | key.like("t%.0") | key.like("t%.0~%")


def is_zero_key(key: str) -> bool:
    return bool(re.fullmatch(r"t(0\.\d+|\d+\.0)(~\d+)?", key))


def free_key(key: str, taken: set[str], conn: sa.Connection, table: sa.Table) -> str:
    """`key`, or `key~2`, `key~3`, ... when an entry (or one re-keyed just before) holds it."""
    candidate, number = key, 1
    while candidate in taken or conn.execute(sa.select(table.c.entry_key).where(table.c.entry_key == candidate)).first():
        number += 1
        candidate = f"{key}~{number}"
    taken.add(candidate)
    return candidate


def _zero_filled_rekeyed(conn: sa.Connection, _state: None) -> None:
    entries = halo_time_entries
    stale = conn.execute(sa.select(entries).where(zero_keyed(entries) | sa.or_(*[entries.c[c] == 0 for c in ZERO_IDS]))
                         .order_by(entries.c.entry_key)).mappings().all()
    taken: set[str] = set()
    for row in stale:
        values = {c: (None if row[c] == 0 else row[c]) for c in ZERO_IDS}
        fixed = {**row, **values}
        new_key = row["entry_key"] if not is_zero_key(row["entry_key"]) else free_key(fingerprint(fixed), taken, conn, entries)
        conn.execute(entries.update().where(entries.c.entry_key == row["entry_key"])
                     .values(entry_key=new_key, fingerprint=fingerprint(fixed), **values,
                             ticket_key=None if values["ticket_id"] is None or values["action_number"] is None else row["ticket_key"]))


UPGRADES += [
    Upgrade("halo_time_entries: numeric ids to entry keys", before=lambda conn: retire_numeric_keyed(conn, "halo_time_entries", "id"),
            after=_entries_keyed),
    Upgrade("halo_time_entries: zero-filled ids to fingerprints", after=_zero_filled_rekeyed),
]
