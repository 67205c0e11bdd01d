"""Every HaloPSA time entry exactly once, under a key of its own, whatever window, chunk or run
reads it: time without a ticket as real tenants send it (`ticket_id: 0, action_number: 0`), breaks
and leave, identical twins; a key claimed by two different records fails the run loudly and loses
neither; and a warehouse and Xero organisation filled by the code before (keys `t0.0~N`) are
re-keyed on first start without a duplicate or an orphan in Xero."""

import io
import os
import secrets
import subprocess
import sys
import tarfile
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import xero_resources
from cryptography.fernet import Fernet
from helpers import AGENT, AUTUMN, YEAR, check_results, halo_entries, halo_keys, is_work, meta, push, stored_entries, sync_year

from resources.warehouse import WarehouseResource, engine_for
from sync_assets.fiscal_years import FISCAL_YEARS
from sync_assets.halo import agent_mappings, halo_agents

pytestmark = pytest.mark.usefixtures("frozen_clock")

FALL = (date(2026, 9, 1), date(2026, 11, 30))
# The last commit whose entry keys depended on the rest of the response (t0.0, t0.0~2, ...).
BEFORE = "41de2bf8e489156ec5e5521a28f4fccaa83c021f"
DAYS = (date(2026, 11, 16), date(2026, 11, 17), date(2026, 11, 18))


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
        yield instance


def add_ticketless(emulator, day: date, *, twins: bool = False) -> list[int]:
    """Two entries without a ticket on the agent's day (served with ticket_id 0, action_number 0)."""
    fields = dict(ticket_id=None, action_number=None, subject="Internal meeting", note="weekly")
    first = emulator.halo.add_entry(AGENT, day, 30, **fields)
    second = emulator.halo.add_entry(AGENT, day, 30 if twins else 45, **fields)
    if twins:  # identical in every field: the same meeting logged twice
        emulator.halo.edit_entry(second, **{k: emulator.halo.entries()[first][k] for k in ("start_date", "end_date", "client_id",
                                                                                         "customer", "contract_id", "site_id")})
    return [first, second]


def test_ticketless_time_breaks_and_leave_are_each_stored_once_under_the_same_key_by_year_and_window_runs(emulator, sqlite_warehouse_url, instance):
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    for day in DAYS:
        add_ticketless(emulator, day, twins=day == DAYS[0])
    served = emulator.halo.served_entries()
    assert any(e["ticket_id"] == 0 and e["action_number"] == 0 for e in served.values())  # as real tenants send it
    assert dg.materialize([halo_agents, agent_mappings], resources=resources, instance=instance).success

    year = sync_year(resources, instance, days=AUTUMN)  # three chunks of 31 days
    window = sync_year(resources, instance, days={"start": "2026-11-10", "end": "2026-11-19"})  # the hourly run's window
    again = sync_year(resources, instance, days=AUTUMN)

    truth = halo_entries(emulator, *FALL)
    for result in (year, window, again):
        assert result.success and check_results(result)["nothing_lost"]
        books = meta(result)
        assert books["unaccounted"] == 0 and books["received"] == books["stored"] + books["rejected"] + books["excluded"]
    assert stored_entries(sqlite_warehouse_url, *FALL) == truth  # every entry once, under its own key
    assert (meta(window)["entries_inserted"], meta(again)["entries_inserted"], meta(again)["entries_updated"]) == (0, 0, 0)
    keys = halo_keys(emulator)
    assert [k for k in truth if "~" in k]  # the meeting logged twice is two entries, told apart
    with engine_for(sqlite_warehouse_url).connect() as conn:
        kinds = dict(conn.execute(sa.text("SELECT entry_key, time_kind FROM halo_time_entries WHERE deleted_at IS NULL")).all())
    expected = {keys[i]: emulator.halo.kind(i) for i in served if keys[i] in truth}
    assert {k: kinds[k] for k in expected} == expected
    assert {"break", "leave"} <= set(expected.values())
    hours = meta(again)
    assert hours["break_hours"] > 0 and hours["leave_hours"] > 0 and hours["work_hours"] > hours["break_hours"]


def test_two_different_entries_on_one_ticket_key_fail_the_run_and_lose_neither(emulator, sqlite_warehouse_url, instance):
    resources = xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())
    assert dg.materialize([halo_agents, agent_mappings], resources=resources, instance=instance).success
    assert sync_year(resources, instance, days=AUTUMN).success
    entries = emulator.halo.entries()
    one, other = sorted(i for i, e in entries.items() if e["ticket_id"] and e["start_date"][:10] == "2026-11-18")[:2]
    before = stored_entries(sqlite_warehouse_url, *FALL)
    emulator.halo.edit_entry(other, ticket_id=entries[one]["ticket_id"], action_number=entries[one]["action_number"])

    result = sync_year(resources, instance, days=AUTUMN)

    assert not result.success
    (lost,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "nothing_lost"]
    assert not lost.passed and lost.metadata["rejected"].value == 2
    key = f"t{entries[one]['ticket_id']}.{entries[one]['action_number']}"
    assert stored_entries(sqlite_warehouse_url, *FALL)[key] == before[key]  # the stored entry is kept, not overwritten
    with engine_for(sqlite_warehouse_url).connect() as conn:
        held = conn.execute(sa.text("SELECT reason FROM sync_rejects WHERE entity = 'time entry'")).scalars().all()
    assert len([r for r in held if key in r]) == 2  # both records kept, with the reason


# -- the upgrade from keys that depended on the response ---------------------------------------------
LEGACY = """
import sys
import dagster as dg
from emulator import halo as H, xero as X
from resources.halo import HaloPSAResource
from resources.mappings import MappingFilesResource
from resources.warehouse import WarehouseResource
from resources.xero import XeroResource
from sync_assets.halo import agent_mappings, halo_agents, halo_timesheets
from sync_assets.xero import xero_time_entries

url, warehouse, schema, key, year, start, end, *days = sys.argv[1:]
resources = {
    "halopsa": HaloPSAResource(base_url=url, auth_url=url + "/auth", client_id=H.CLIENT_ID, client_secret=H.CLIENT_SECRET),
    "mapping_files": MappingFilesResource(agent_mappings_file="config/agent_mappings.csv"),
    "warehouse": WarehouseResource(url=warehouse, db_schema=schema or None),
    "xero": XeroResource(api_url=url, identity_url=url, client_id=X.CLIENT_ID, client_secret=X.CLIENT_SECRET,
                         tenant_id=X.TENANT_ID, token_key=key, initial_refresh_token=X.INITIAL_REFRESH_TOKEN),
}
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions("fiscal_years", [year])
assert dg.materialize([halo_agents, agent_mappings], resources=resources, instance=instance).success
assert dg.materialize([halo_timesheets], resources=resources, instance=instance, partition_key=year,
                      run_config={"ops": {"halo_timesheets": {"config": {"start": start, "end": end}}}}).success
for day in days:
    assert dg.materialize([xero_time_entries], resources=resources, instance=instance, partition_key=day,
                          run_config={"ops": {"xero_time_entries": {"config": {"dry_run": False}}}}).success
"""


def code_before(tmp_path: Path) -> Path:
    """The project as it was at BEFORE, from this repository's history."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", BEFORE], capture_output=True)
    assert archive.returncode == 0, f"the upgrade test needs commit {BEFORE} in the repository's history: {archive.stderr.decode()[:300]}"
    target = tmp_path / "before"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """(url, schema) of an empty warehouse."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}", ""
        return
    schema, url = f"rekey_{secrets.token_hex(4)}", request.getfixturevalue("postgres_url")
    yield url, schema
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def live_entries(url: str, schema: str) -> dict[str, tuple]:
    query = sa.text("SELECT entry_key, agent_id, work_date, minutes FROM halo_time_entries "
                    "WHERE deleted_at IS NULL AND work_date BETWEEN :first AND :last")
    with engine_for(url, schema or None).connect() as conn:
        return {r.entry_key: (r.agent_id, r.work_date if isinstance(r.work_date, date) else date.fromisoformat(r.work_date), r.minutes)
                for r in conn.execute(query, {"first": FALL[0], "last": FALL[1]})}


def test_keys_made_by_the_code_before_are_rekeyed_without_a_duplicate_or_an_orphan_in_xero(emulator, tmp_path, instance, store):
    url, schema = store
    key = Fernet.generate_key().decode()
    for day in DAYS:
        add_ticketless(emulator, day)
        emulator.halo.add_entry(AGENT, day, 60, ticket_id=None, action_number=None, event_type=1, break_type=2,
                                break_type_name="Lunch break", subject="Lunch break")
        emulator.halo.approve(AGENT, day)

    # Before: today's code before this change, run against the same tenant, warehouse and Xero.
    before = code_before(tmp_path)
    legacy = subprocess.run([sys.executable, "-c", LEGACY, emulator.url, url, schema, key, YEAR, AUTUMN["start"], AUTUMN["end"],
                             *map(str, DAYS)], cwd=before, env={**os.environ, "PYTHONPATH": str(before)},
                            capture_output=True, text=True, timeout=600)
    assert legacy.returncode == 0, legacy.stderr[-3000:]
    in_xero = emulator.xero.entries()
    markers = [e["description"] for e in in_xero.values()]
    assert any("[halo t0.0" in m for m in markers)  # the state the issue found: ticketless time under t0.0~N
    assert any(m.startswith("Lunch break") for m in markers)  # and a break billed

    # After: the new code opens the same warehouse, syncs and pushes the same days, twice.
    emulator.reset_requests()
    after = {**xero_resources(emulator, url, key), "warehouse": WarehouseResource(url=url, db_schema=schema or None)}
    synced = sync_year(after, instance, days=AUTUMN)
    first = [push(after, instance, day) for day in DAYS]
    writes_first = [r for r in emulator.requests("xero", "/Time") if r.method in ("POST", "PUT", "DELETE")]
    emulator.reset_requests()
    second = [push(after, instance, day) for day in DAYS]

    assert synced.success and all(r.success for r in first + second)
    assert live_entries(url, schema) == halo_entries(emulator, *FALL)
    assert [r for r in emulator.requests("xero", "/Time") if r.method in ("POST", "PUT", "DELETE")] == []  # the second push writes nothing
    work = {i: e for i, e in emulator.halo.entries().items()
            if e["agent_id"] == AGENT and date.fromisoformat(e["start_date"][:10]) in DAYS and is_work(e)}
    now_in_xero = list(emulator.xero.entries().values())
    assert not [e for e in now_in_xero if e["description"].startswith("Lunch break")]  # the billed break is gone
    by_moment = sorted((e["dateUtc"][:19], e["duration"]) for e in now_in_xero)
    assert by_moment == sorted((e["start_date"][:19], emulator.halo.minutes(i)) for i, e in work.items())  # each work entry once
    assert {r.method for r in writes_first} <= {"POST", "DELETE", "PUT"}
    survivors = {e["timeEntryId"] for e in now_in_xero} & set(in_xero)
    assert survivors  # what Xero held was recognised and kept, not deleted and made again

