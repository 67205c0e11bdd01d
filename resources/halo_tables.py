"""HaloPSA's tables in the warehouse: agents, the agent mappings, time entries, timesheets, and
what each synced date range last received."""

import sqlalchemy as sa

from resources.tables import TABLES, RawJSON, synced_columns

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
ENTRY_KEY = sa.String(80)

halo_time_entries = sa.Table(
    "halo_time_entries",
    TABLES,
    sa.Column("entry_key", ENTRY_KEY, primary_key=True, comment="#(id), t(ticket_id).(action_number) or f(fingerprint)"),
    sa.Column("halo_id", sa.Integer, comment="the id Halo sent, when real (tenants that hide it send 0)"),
    sa.Column("ticket_key", sa.String(40), comment="t<ticket_id>.<action_number> for ticket time"),
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
