"""Property-based tests of every parser from provider JSON to warehouse rows: whatever a provider
sends (arbitrary strings, unicode, huge numbers, missing and null fields, wrong types, dates out
of range), a record either becomes a row or is rejected with a reason the asset can record;
nothing else escapes. And a good record survives the trip exactly."""

from datetime import date, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings, strategies as st

from resources.employes import employment_rows, snapshot_row
from resources.ghl import parse_contacts
from resources.halo import agent_row, entry_row, key_entries, timesheet_row
from resources.mappings import ProjectMappings, read_agent_mappings, read_project_mappings
from sync_assets.xero_plan import read_halo, wanted_entries

# What the assets catch around each parser (resources/records.py `parse_each`, sync_assets/employes.py).
HALO_REJECTS = (ValueError, TypeError, KeyError)
EMPLOYES_REJECTS = (ValueError,)

scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["0001-01-01T00:00:00", "2026-11-20T08:30:00", "9999-12-31T23:59:59", "2026-02-30", "1e400"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=6)


def variants(valid: dict) -> st.SearchStrategy:
    """`valid` with up to three fields replaced by anything and up to two removed, or anything at all."""
    fields = sorted(valid)
    changed = st.builds(
        lambda changes, dropped: {k: v for k, v in {**valid, **changes}.items() if k not in dropped},
        st.dictionaries(st.sampled_from(fields), json_values, max_size=3),
        st.sets(st.sampled_from(fields), max_size=2),
    )
    return changed | json_values


HALO_ENTRY = {"id": 1, "agent_id": 3, "start_date": "2026-11-20T08:30:00", "end_date": "2026-11-20T09:00:00",
              "timetaken": 0.5, "ticket_id": 10, "action_number": 1, "client_id": 12, "customer": "Acme", "contract_id": 5012,
              "site_id": 1, "event_type": 0, "subject": "Printer", "note": "fixed", "charge_rate": 95.0}
HALO_SHEET = {"id": 1, "agent_id": 3, "date": "2026-11-20T00:00:00", "target_hours": 8, "actual_hours": 7.5,
              "approval": {"approvalstatus": 1, "approvedby": 1, "approver": "Anna", "submissiondate": "2026-11-21T09:00:00"}}
HALO_AGENT = {"id": 3, "name": "Anna Bakker", "firstname": "Anna", "surname": "Bakker", "email": "a@example.test",
              "isdisabled": False, "team": "Projects", "jobtitle": "Engineer"}
GHL_CONTACT = {"id": "c1", "dateUpdated": "2026-11-20T08:30:00.000Z", "dateAdded": "2026-01-01T00:00:00.000Z",
               "firstName": "Anna", "email": "a@example.test", "tags": ["vip"], "customFields": [], "dnd": False}
EMPLOYEE = {"id": "e1", "employee_number": "E1001", "first_name": "Anna", "surname": "Bakker", "status": "active",
            "department": {"name": "Projects"}, "function": "Engineer",
            "employment": {"start_date": "2020-01-01T00:00:00", "end_date": "0001-01-01T00:00:00",
                           "contract": {"hours_per_week": 40, "days_per_week": 5, "employee_type": "permanent"},
                           "salary": {"hour_wage": 20.5, "month_wage": 3000, "yearly_wage": 40000}}}
EMPLOYMENT = {"id": "m1", "start_date": "2020-01-01T00:00:00", "end_date": None, "is_active": True,
              "salary": [{"start_date": "2020-01-01T00:00:00", "hour_wage": 20}],
              "hours": [{"start_date": "2020-01-01T00:00:00", "hours_per_week": 40}],
              "contracts": [{"start_date": "2020-01-01T00:00:00", "sign_date": "2020-01-01T00:00:00"}]}
STORABLE = (str, int, float, Decimal, date, datetime, type(None))  # what a warehouse column can bind


def storable(value) -> bool:
    """Binds to its column on PostgreSQL too: integers fit INTEGER, ids fit VARCHAR(64)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return -(2**31) <= value < 2**31
    return isinstance(value, STORABLE)
relaxed = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def rejected_or_parsed(parse, record, *args, rejects=HALO_REJECTS):
    try:
        row = parse(record, *args)
    except rejects as error:
        assert str(error), f"{parse.__name__} rejected {record!r} without a reason"
        return None
    if isinstance(row, dict) and not all(isinstance(v, list) for v in row.values()):
        assert all(storable(v) for v in row.values()), row
        assert all(len(row[k]) <= 64 for k in ("id", "employee_id") if isinstance(row.get(k), str)), row
    return row


@relaxed
@given(variants(HALO_ENTRY))
def test_any_halo_time_entry_becomes_a_row_or_a_reason(record):
    row = rejected_or_parsed(entry_row, record, "FY2026")
    if row is not None:
        assert 0 <= row["minutes"] <= 60 * 24 * 31 and (row["halo_id"] is None or row["halo_id"] == record["id"])


@relaxed
@given(st.lists(variants(HALO_ENTRY), max_size=6))
def test_every_halo_entry_of_a_response_gets_its_own_key_or_a_reason(batch):
    keyed = key_entries(batch, "FY2026")
    assert len(keyed.rows) + len(keyed.rejects) + keyed.sent_twice == len(batch) == keyed.received
    keys = [r["entry_key"] for r in keyed.rows]
    assert len(set(keys)) == len(keys) and all(len(k) <= 80 for k in keys)


@relaxed
@given(variants(HALO_SHEET))
def test_any_halo_timesheet_becomes_a_row_or_a_reason(record):
    rejected_or_parsed(timesheet_row, record, "FY2026")


@relaxed
@given(variants(HALO_AGENT))
def test_any_halo_agent_becomes_a_row_or_a_reason(record):
    rejected_or_parsed(agent_row, record)


@relaxed
@given(st.lists(variants(GHL_CONTACT), max_size=5))
def test_every_ghl_contact_is_a_row_or_a_reject(batch):
    frame, rejects = parse_contacts(batch)
    assert len(frame) + len(rejects) == len(batch)
    assert all(r["reason"] for r in rejects)


@relaxed
@given(variants(EMPLOYEE))
def test_any_employee_becomes_a_row_or_a_reason(record):
    rejected_or_parsed(snapshot_row, record, date(2026, 11, 20), rejects=EMPLOYES_REJECTS)


@relaxed
@given(st.lists(variants(EMPLOYMENT), max_size=3))
def test_any_employment_history_becomes_rows_or_a_reason(items):
    rows = rejected_or_parsed(employment_rows, "employee-1", items, rejects=EMPLOYES_REJECTS)
    for periods in (rows or {}).values():
        assert all(storable(v) for p in periods for v in p.values())


@relaxed
@given(st.lists(variants(HALO_ENTRY), max_size=4), st.lists(variants(HALO_SHEET), max_size=4))
def test_building_xero_entries_never_raises(entries, sheets):
    wanted, invalid = wanted_entries(read_halo(entries, sheets), {1: "user-1"}, ProjectMappings({}))
    assert not set(wanted) & set(invalid)


@relaxed
@given(st.text(max_size=300))
def test_any_mapping_file_loads_or_names_its_problems(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("mapping") / "file.csv"
    path.write_text(text, encoding="utf-8")
    for read in (read_agent_mappings, read_project_mappings):
        _, problems = read(path)
        assert all(p.startswith(("line ", "cannot read")) for p in problems)


@relaxed
@given(st.integers(min_value=1, max_value=24 * 60), st.text(min_size=1, max_size=80), st.integers(min_value=1, max_value=2**31 - 1))
def test_a_good_halo_entry_keeps_its_exact_minutes_and_text(minutes, subject, entry_id):
    record = {"id": entry_id, "agent_id": 3, "start_date": "2026-11-20T08:30:00", "timetaken": round(minutes / 60, 10),
              "subject": subject, "client_id": 12}
    row = entry_row(record, "FY2026")
    assert (row["minutes"], row["subject"], row["work_date"]) == (minutes, subject, date(2026, 11, 20))
