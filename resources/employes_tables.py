"""Employes' tables in the warehouse: the daily snapshots, the history built from them, the
changes between them, and the employment periods."""

import sqlalchemy as sa

from resources.tables import TABLES, RawJSON


# Wages are personal data, stored because salary changes are a feature; IBAN, birth date,
# address, phone, e-mail and gender are not stored anywhere.
def employee_fields() -> list[sa.Column]:
    """An employee's fields as a snapshot and a history version keep them (new columns for each
    table). The tracked fields (resources/employes.py `TRACKED`) are these, in this order."""
    return [
        sa.Column("employee_number", sa.Text),
        sa.Column("first_name", sa.Text),
        sa.Column("surname_prefix", sa.Text),
        sa.Column("surname", sa.Text),
        sa.Column("status", sa.Text, comment="pending | active | out of service"),
        sa.Column("department", sa.Text),
        sa.Column("role", sa.Text),
        sa.Column("employment_start", sa.Date),
        sa.Column("employment_end", sa.Date),
        sa.Column("hours_per_week", sa.Numeric(6, 2)),
        sa.Column("days_per_week", sa.Numeric(4, 2)),
        sa.Column("employee_type", sa.Text),
        sa.Column("hour_wage", sa.Numeric(12, 2)),
        sa.Column("month_wage", sa.Numeric(12, 2)),
        sa.Column("yearly_wage", sa.Numeric(12, 2)),
    ]


employes_employee_snapshots = sa.Table(
    "employes_employee_snapshots",
    TABLES,
    sa.Column("snapshot_date", sa.Date, primary_key=True),
    sa.Column("employee_id", sa.String(64), primary_key=True),
    *employee_fields(),
    sa.Column("raw", RawJSON, comment="GET /employees/{id} as sent, without the personal fields never stored"),
    sa.Column("content_hash", sa.String(32), nullable=False),
    sa.Column("fetched_at", sa.DateTime, nullable=False),
)

employes_employee_history = sa.Table(
    "employes_employee_history",
    TABLES,
    sa.Column("employee_id", sa.String(64), primary_key=True),
    sa.Column("valid_from", sa.Date, primary_key=True, comment="first snapshot with these values"),
    sa.Column("valid_to", sa.Date, comment="first snapshot without them (exclusive); null while current"),
    *employee_fields(),
)

employes_employee_changes = sa.Table(
    "employes_employee_changes",
    TABLES,
    sa.Column("snapshot_date", sa.Date, primary_key=True),
    sa.Column("employee_id", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(32), primary_key=True, comment="a snapshot field, or `employee` for hired/removed"),
    sa.Column("employee_number", sa.Text),
    sa.Column("old_value", sa.Text),
    sa.Column("new_value", sa.Text),
    sa.Column("previous_snapshot_date", sa.Date),
    sa.Column("detected_at", sa.DateTime, nullable=False),
)


def _period_table(name: str, *columns: sa.Column) -> sa.Table:
    return sa.Table(
        name,
        TABLES,
        sa.Column("employment_id", sa.String(64), primary_key=True),
        sa.Column("start_date", sa.Date, primary_key=True),
        sa.Column("employee_id", sa.String(64), nullable=False, index=True),
        sa.Column("end_date", sa.Date, comment="null: open"),
        sa.Column("is_active", sa.Boolean),
        *columns,
        sa.Column("snapshot_date", sa.Date, nullable=False, comment="the day this was fetched"),
    )


employes_employments = sa.Table(
    "employes_employments",
    TABLES,
    sa.Column("employment_id", sa.String(64), primary_key=True),
    sa.Column("employee_id", sa.String(64), nullable=False, index=True),
    sa.Column("start_date", sa.Date),
    sa.Column("end_date", sa.Date, comment="null: open"),
    sa.Column("is_active", sa.Boolean),
    sa.Column("snapshot_date", sa.Date, nullable=False, comment="the day this was fetched"),
)
employes_salary_periods = _period_table(
    "employes_salary_periods",
    sa.Column("hour_wage", sa.Numeric(12, 2)),
    sa.Column("month_wage", sa.Numeric(12, 2)),
    sa.Column("yearly_wage", sa.Numeric(12, 2)),
)
employes_hours_periods = _period_table(
    "employes_hours_periods",
    sa.Column("hours_per_week", sa.Numeric(6, 2)),
    sa.Column("days_per_week", sa.Numeric(4, 2)),
    sa.Column("employee_type", sa.Text),
)
employes_contract_periods = _period_table(
    "employes_contract_periods",
    sa.Column("contract_duration", sa.Text),
    sa.Column("is_signed", sa.Boolean),
    sa.Column("sign_date", sa.Date),
)

tables = (employes_employee_snapshots, employes_employee_history, employes_employee_changes, employes_employments,
          employes_salary_periods, employes_hours_periods, employes_contract_periods)
