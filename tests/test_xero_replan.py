"""The push plans only against what has loaded, and plans again when it changes: an approval
pushed before the agent mappings' first load waits (`deferred`) and reaches Xero once they load;
an operator who adds a missing mapping sees those entries reach Xero; the sensor
`xero_mapping_changes` asks nothing while nothing changed. Real Dagster runs and sensor ticks
over real HTTP to the emulator's Halo and Xero."""

from datetime import date

import dagster as dg
import pytest
from conftest import xero_resources
from cryptography.fernet import Fernet
from helpers import AGENT, DAY, built, check_results as checks, halo_day, ledger, load_mappings, meta, push, xero_by_halo_id

from definitions import defs as load_definitions
from emulator import xero as xero_emulator
from resources.mappings import MappingFilesResource
from resources.settings import PROJECT_ROOT
from sensors.xero import PlanInputs, replan_dates, sensors as xero_sensors

# Built as the code location builds them (the approval sensor's interval is a setting, read when built).
xero_mapping_changes = built(xero_sensors(), "xero_mapping_changes")

defs = load_definitions()

# The emulator's data has fixed dates: Dagster's clock agrees with them (conftest.NOW).
pytestmark = pytest.mark.usefixtures("frozen_clock")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def resources(emulator, sqlite_warehouse_url):
    """A new installation: nothing synced, the agent mappings not loaded yet."""
    return xero_resources(emulator, sqlite_warehouse_url, Fernet.generate_key().decode())


def tick(instance, resources, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                      resources={"warehouse": resources["warehouse"], "mapping_files": resources["mapping_files"]})
    return xero_mapping_changes.evaluate_tick(context)


def requested(result) -> list[str]:
    return [r.partition_key for r in result.run_requests or []]


def push_requested(resources, instance, result) -> list:
    return [push(resources, instance, date.fromisoformat(key)) for key in requested(result)]


def assert_in_xero(emulator, entries: dict[int, dict]) -> None:
    in_xero = xero_by_halo_id(emulator)
    for entry_id, entry in entries.items():
        (pushed,) = in_xero[entry_id]
        assert pushed["userId"] == xero_emulator.user_id(entry["agent_id"])
        assert pushed["duration"] == emulator.halo.minutes(entry_id)


def test_an_approval_pushed_before_the_mappings_loaded_waits_and_reaches_xero_once_they_do(
        emulator, resources, instance, sqlite_warehouse_url):
    emulator.halo.approve(AGENT, DAY)
    before = tick(instance, resources, None)  # nothing loaded: nothing can be planned yet
    result = push(resources, instance)

    assert result.success
    assert emulator.xero.entries() == {} and emulator.requests("xero") == []
    entries = halo_day(emulator)
    rows = ledger(sqlite_warehouse_url, emulator)
    assert {i: rows[i].status for i in entries} == dict.fromkeys(entries, "deferred")
    assert all("agent mappings have not loaded" in rows[i].last_error for i in entries)
    assert meta(result, "xero_time_entries")["deferred"] == len(entries) and meta(result, "xero_time_entries")["planned_invalid"] == 0
    assert checks(result)["xero_entries_pushable"] is True  # waiting, not broken
    assert not requested(before)

    load_mappings(resources, instance)
    after = tick(instance, resources, before.cursor)
    assert requested(after) == [DAY.isoformat()]
    assert all(r.run_key.startswith(f"replan-{DAY}-") for r in after.run_requests)
    (replanned,) = push_requested(resources, instance, after)
    assert replanned.success and meta(replanned, "xero_time_entries")["created"] == len(entries)
    assert_in_xero(emulator, entries)
    assert {r.status for i, r in ledger(sqlite_warehouse_url, emulator).items() if i in entries} == {"pushed"}
    assert not requested(tick(instance, resources, after.cursor))  # a tick with no change asks nothing


def test_an_operator_who_adds_a_missing_mapping_sees_those_entries_reach_xero(
        emulator, resources, instance, sqlite_warehouse_url, tmp_path):
    lines = (PROJECT_ROOT / "config/agent_mappings.csv").read_text().splitlines()
    mapping = tmp_path / "agent_mappings.csv"
    without = [",".join((*fields[:2], "", *fields[3:])) if fields[0] == str(AGENT) else line
               for line in lines for fields in [line.split(",")]]
    mapping.write_text("\n".join(without) + "\n")
    resources["mapping_files"] = MappingFilesResource(agent_mappings_file=str(mapping))
    load_mappings(resources, instance)
    start = tick(instance, resources, None)
    assert not requested(start)

    emulator.halo.approve(AGENT, DAY)
    emulator.halo.approve(AGENT + 1, DAY)
    assert push(resources, instance).success
    unmapped, mapped = halo_day(emulator), halo_day(emulator, AGENT + 1)
    rows = ledger(sqlite_warehouse_url, emulator)
    assert all(rows[i].status == "invalid" and "no xero_user_id" in rows[i].last_error for i in unmapped)
    assert set(xero_by_halo_id(emulator)) == set(mapped)
    assert not requested(tick(instance, resources, start.cursor))  # nothing changed: nothing asked

    mapping.write_text("\n".join(lines) + "\n")  # the operator adds the missing xero_user_id
    load_mappings(resources, instance)
    changed = tick(instance, resources, start.cursor)
    assert requested(changed) == [DAY.isoformat()]
    (replanned,) = push_requested(resources, instance, changed)
    assert replanned.success and meta(replanned, "xero_time_entries")["created"] == len(unmapped)
    assert_in_xero(emulator, unmapped | mapped)
    assert not requested(tick(instance, resources, changed.cursor))


def test_which_dates_a_change_affects():
    rows = [(date(2026, 11, 16), "pushed", 1), (date(2026, 11, 17), "pushed", 2), (date(2026, 11, 18), "invalid", 3),
            (date(2026, 11, 19), "deferred", 3)]
    before = PlanInputs({1: "u1", 2: "u2", 3: None}, "p")
    waiting = {date(2026, 11, 18), date(2026, 11, 19)}
    assert replan_dates(rows, None, before) == waiting  # a first tick: the dates with entries waiting
    assert replan_dates(rows, before, PlanInputs({1: "u1", 2: "u2*", 3: None}, "p")) == waiting | {date(2026, 11, 17)}
    assert replan_dates(rows, before, PlanInputs({1: "u1", 3: None}, "p")) == waiting | {date(2026, 11, 17)}  # a line removed
    assert replan_dates(rows, before, PlanInputs(before.agents, "p2")) == {day for day, _, _ in rows}  # the project file
    assert PlanInputs({1: "u1"}, "p").digest != PlanInputs({1: None}, "p").digest != PlanInputs({1: None}, "q").digest
