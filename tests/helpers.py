"""What several test modules share: reading a failed run, free ports, patient waits, the
emulator barrier that keeps two runs in step (Lockstep), the hard days on which the
date-sensitive tests also run, and GoHighLevel and Xero comparisons. Fixtures live in
conftest.py; this module holds plain functions and classes (importable from a child process too)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import sqlalchemy as sa

from emulator import xero as xero_emulator
from resources.ghl import parse_contacts
from resources.halo import entry_row, key_entries
from resources.records import content_hash
from resources.settings import setting
from resources.warehouse import engine_for
from sync_assets.ghl import ghl_contacts_reconciliation
from sync_assets.halo import agent_mappings, halo_agents, halo_timesheets, mappings_match_agents, no_unmapped_agents
from sync_assets.xero import time_entries, xero_entries_pushable, xero_no_locked_conflicts
from sync_assets.xero_plan import MARKER

xero_time_entries = time_entries()  # built as the code location builds it (its partitions are settings)

FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "


def failure_message(result) -> str:
    """The first failed step's message, without the exception's class name."""
    message = next(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)
    return message.removeprefix(FAILURE_PREFIX)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process, timeout_s: float = 60.0) -> None:
    """Stop a process started in its own session (start_new_session=True) and all it started:
    SIGTERM, then SIGKILL for whatever has not exited after `timeout_s`."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until(what: str, check: Callable, seconds: float, seen: Callable[[], object] | None = None, every_s: float = 0.05):
    """Poll `check` until it returns something true, and return that. The limit is generous: a busy
    machine is slow, not wrong. On giving up, say what was awaited and what `seen` (default: the
    last value `check` returned) saw."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s; saw: {seen() if seen else result!r}")
        time.sleep(every_s)


class Lockstep:
    """An emulator observer for two runs of the same work: a matching request waits for the other
    run's matching request, so the two runs' pages are answered (and then written) together, or
    the two runs' first pushes are made at once (`meetings=1`).

    How long the other run takes to get there (starting a process, or writing the previous page
    while the database is busy) does not matter: the wait ends when the other run asks too, when it
    has finished (`release`), or after `timeout_s`, a limit for a run that is stuck. A 5 s wait
    here once let one run of the concurrent-runs test go on alone while its partner was still
    writing on a loaded machine; the two fell out of step."""

    def __init__(self, matches, timeout_s: float = 120.0, meetings: int | None = None):
        self.matches, self.timeout_s, self.meetings = matches, timeout_s, meetings
        self.barrier = threading.Barrier(2)
        self.met = 0
        self.alone = False  # set when one run has finished (or after `meetings`): the other goes on unheld

    def __call__(self, served) -> None:
        if self.alone or not self.matches(served):
            return
        try:
            if self.barrier.wait(self.timeout_s) == 0:
                self.met += 1
                self.alone = self.meetings is not None and self.met >= self.meetings
        except threading.BrokenBarrierError:  # released: the other run has finished (or is stuck for minutes)
            pass

    def release(self) -> None:
        """One run has finished: the other must not wait for it any more."""
        self.alone = True
        self.barrier.abort()


def hard_instants(zone: str | None = None) -> dict[str, datetime]:
    """Moments the date-sensitive tests also run at, as wall-clock times in SYNC_TIMEZONE: the turn
    of the year (calendar and default fiscal year), a leap day, and both daylight-saving changes of
    Europe/Amsterdam (given in UTC: the first hour after clocks jump forward, and the repeated
    hour after they go back)."""
    tz = ZoneInfo(zone or setting("SYNC_TIMEZONE"))
    return {
        "new-years-eve-23h30": datetime(2026, 12, 31, 23, 30, tzinfo=tz),
        "new-years-day-00h30": datetime(2027, 1, 1, 0, 30, tzinfo=tz),
        "leap-day": datetime(2028, 2, 29, 12, 0, tzinfo=tz),
        "dst-spring-forward": datetime(2027, 3, 28, 1, 30, tzinfo=UTC).astimezone(tz),  # 03:30 CEST
        "dst-fall-back": datetime(2026, 10, 25, 1, 30, tzinfo=UTC).astimezone(tz),  # the second 02:30 (CET)
    }


# -- GoHighLevel ---------------------------------------------------------------------------------
def warehouse_contacts(url: str, *, live_only: bool = True) -> dict[str, dict]:
    """Rows of `ghl_contacts`, by id."""
    query = "SELECT * FROM ghl_contacts" + (" WHERE deleted_at IS NULL" if live_only else "")
    with engine_for(url).connect() as conn:
        return {row["id"]: dict(row) for row in conn.execute(sa.text(query)).mappings()}


def reconcile(resources, instance=None, max_delete_share=None) -> dg.ExecuteInProcessResult:
    config = {"ops": {"ghl_contacts_reconciliation": {"config": {"max_delete_share": max_delete_share}}}} if max_delete_share else None
    return dg.materialize([ghl_contacts_reconciliation], resources=resources, instance=instance, run_config=config, raise_on_error=False)


def run_metadata(result, asset) -> dict:
    (materialization,) = result.asset_materializations_for_node(asset.key.to_python_identifier())
    return {k: v.value for k, v in materialization.metadata.items()}


def assert_warehouse_matches_provider(emulator, url) -> None:
    truth = emulator.ghl.truth()
    stored = warehouse_contacts(url)
    assert sorted(stored) == sorted(truth)
    for contact_id, contact in truth.items():
        assert stored[contact_id]["phone"] == contact["phone"], contact_id
        assert stored[contact_id]["content_hash"] == parse_contacts([contact])[0]["content_hash"][0]


# -- Xero ----------------------------------------------------------------------------------------
CONTRACTS_WITH_THEIR_OWN_TASK = {5012, 5013, 5015, 5017}  # lines of config/xero_projects.csv


def halo_keys(emulator) -> dict[int, str]:
    """Each emulated Halo entry's key as the sync gives it, by the emulator's own entry id: how tests
    find the truth in the warehouse and Xero. A key is the entry's own; identical twins (one
    fingerprint) take ~2, ~3 in content order, as the sync numbers them."""
    served = emulator.halo.served_entries()
    rows = {entry_id: entry_row(entry, "") for entry_id, entry in served.items()}
    by_key: dict[str, list[int]] = {}
    for entry_id, row in rows.items():
        by_key.setdefault(row["entry_key"], []).append(entry_id)
    keys = {}
    for key, ids in by_key.items():
        keyed = key_entries([served[i] for i in ids], "")
        assert not keyed.rejects and not keyed.collisions, keyed.collisions
        by_hash = {}
        for row in keyed.rows:
            by_hash.setdefault(row["content_hash"], []).append(row["entry_key"])
        for entry_id in sorted(ids):
            keys[entry_id] = by_hash[content_hash(rows[entry_id])].pop(0)
    return keys


def is_work(entry: dict) -> bool:
    """Whether an emulated entry is work (breaks and leave are never billed)."""
    return not (entry.get("holiday_id") or entry.get("break_type") or entry.get("event_type") == 1)


def xero_by_halo_id(emulator, markers: dict[str, int] | None = None) -> dict[int, list[dict]]:
    """Xero's entries with our marker, by the emulator's id of the Halo entry the marker names."""
    markers = markers or {key: i for i, key in halo_keys(emulator).items()}
    found: dict[int, list[dict]] = {}
    for entry in emulator.xero.entries().values():
        match = MARKER.search(entry.get("description") or "")
        if match:
            found.setdefault(markers.get(match.group(1), match.group(1)), []).append(entry)
    return found


def expected_task(entry: dict) -> str:
    """The Xero task a Halo entry goes to: its contract's own task, else the client's support task."""
    own = entry.get("contract_id") in CONTRACTS_WITH_THEIR_OWN_TASK
    return xero_emulator.task_id(entry["client_id"], "project" if own else "support")


# -- HaloPSA and the Xero push ---------------------------------------------------------------------
# The emulator's data has fixed dates; tests using these freeze Dagster's clock (conftest.NOW).
YEAR = "FY2026"  # 2026-01-01..2026-12-31; the emulator's data runs to 2026-11-19
AUTUMN = {"start": "2026-09-01", "end": "2026-11-30"}  # three chunks of 31 days: quick runs
DAY = date(2026, 11, 18)  # a weekday the emulator has not approved yet
AGENT = 3


def sync_reference(resources, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize([halo_agents, agent_mappings, mappings_match_agents], resources=resources, instance=instance,
                          raise_on_error=False)


def sync_year(resources, instance, key=YEAR, days=None) -> dg.ExecuteInProcessResult:
    config = {"ops": {"halo_timesheets": {"config": days}}} if days else None
    return dg.materialize([halo_timesheets, no_unmapped_agents], resources=resources, instance=instance,
                          partition_key=key, run_config=config, raise_on_error=False)


def meta(result, name="halo_timesheets") -> dict:
    (materialization,) = result.asset_materializations_for_node(name)
    return {k: v.value for k, v in materialization.metadata.items()}


def stored_entries(url, first=date(2026, 1, 1), last=date(2026, 12, 31)) -> dict[str, tuple]:
    query = sa.text("SELECT entry_key, agent_id, work_date, minutes FROM halo_time_entries "
                    "WHERE deleted_at IS NULL AND work_date BETWEEN :first AND :last")
    with engine_for(url).connect() as conn:
        return {r.entry_key: (r.agent_id, r.work_date if isinstance(r.work_date, date) else date.fromisoformat(r.work_date), r.minutes)
                for r in conn.execute(query, {"first": first, "last": last})}


def halo_entries(emulator, first=date(2026, 1, 1), last=date(2026, 12, 31)) -> dict[str, tuple]:
    """The emulator's truth in the range, by the key the sync should give each entry."""
    halo, keys = emulator.halo, halo_keys(emulator)
    truth = {}
    for entry_id, entry in halo.entries().items():
        day = date.fromisoformat(entry["start_date"][:10])
        if first <= day <= last:
            truth[keys[entry_id]] = (entry["agent_id"], day, halo.minutes(entry_id))
    return truth


def check_results(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def halo_day(emulator, agent=AGENT, day=DAY, kinds=("work",)) -> dict[int, dict]:
    """An agent's entries of a day, by the emulator's id: its work by default, what a push bills."""
    return {i: e for i, e in emulator.halo.entries().items()
            if e["agent_id"] == agent and e["start_date"][:10] == day.isoformat() and emulator.halo.kind(i) in kinds}


def load_mappings(resources, instance) -> None:
    assert dg.materialize([halo_agents, agent_mappings], resources=resources, instance=instance).success


def push(resources, instance, day=DAY, **config) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"xero_time_entries": {"config": {"dry_run": False, **config}}}}
    return dg.materialize([xero_time_entries, xero_entries_pushable, xero_no_locked_conflicts], resources=resources,
                          instance=instance, partition_key=day.isoformat(), run_config=run_config, raise_on_error=False)


def ledger(url, emulator=None) -> dict:
    """The ledger's rows by entry key, or (given the emulator) by the emulator's id of their entry."""
    keys = {key: i for i, key in halo_keys(emulator).items()} if emulator else {}
    with engine_for(url).connect() as conn:
        return {keys.get(r.entry_key, r.entry_key): r for r in conn.execute(sa.text("SELECT * FROM xero_ledger"))}


def built(definitions: list, name: str):
    """The one definition called `name` (an asset by its key, a schedule or a sensor by its name)
    among those a factory built: the partitioned assets, the schedules and the sensors whose
    partitions, crons or intervals are settings are built by factories (`sync_assets.employes.assets()`,
    `sensors.xero.sensors()`), as the code location builds them, not kept at module level."""
    (found,) = [d for d in definitions if (d.key.to_user_string() if isinstance(d, dg.AssetsDefinition) else d.name) == name]
    return found
