"""Benchmark: from a provider event to the warehouse / Xero, under the real daemon.

    .venv/bin/python bench/event_latency.py [--approvals 15] [--contacts 15] [--every 8]

As bench/approval_latency.py: the emulator in this process (anchored now, 12 agents, its
realistic rate limits), a fresh SQLite warehouse and `dagster dev` on a fresh DAGSTER_HOME with
the instance settings `ensure_dagster_home` writes (queued runs taken every second), every
setting at its default but XERO_PUSH_ENABLED=true. Before the daemon starts: agents, mappings
and every contact are synced into the warehouse, `first_sync` is stopped and the approval
sensor's cursor set to Halo's newest approval.

Then, one every `--every` seconds: an unapproved agent-day is approved in the emulator and an
event stored as the API stores it (`resources.events.store_event`, source halopsa.approvals),
timed until Xero holds the day's entries; then a contact is changed in the emulator and its
ContactUpdate event stored, timed until its warehouse row has the new value. Printed: p50 / p95
/ max of each, and the provider requests: the approval sensor's reads of Halo (those asked by an
event and those of its 45 s timer) and the GoHighLevel requests of the event runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from approval_latency import candidates, free_port, halo_entries, in_xero, newest_approval, sensor_ticks
from cryptography.fernet import Fernet

from emulator import Emulator
from providers.ghl import LOCAL_LOCATION_ID

PROJECT = Path(__file__).resolve().parent.parent
DAGSTER = Path(sys.executable).parent / "dagster"  # the interpreter's own: this checkout's code via PYTHONPATH


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"p50 {statistics.median(values):.1f} s, p95 {p95:.1f} s, max {values[-1]:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approvals", type=int, default=15)
    parser.add_argument("--contacts", type=int, default=15)
    parser.add_argument("--every", type=float, default=8.0, help="seconds between changes")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one change")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="event-bench-"))
    emulator = Emulator(seed=7, anchor=datetime.now(UTC), agents=12, contacts=500, employees=10)
    emulator.start()
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster_home"), "SYNC_ENV": "local", "EMULATOR_URL": emulator.url,
           "WAREHOUSE_URL": f"sqlite:///{home}/warehouse.db", "XERO_TOKEN_KEY": Fernet.generate_key().decode(),
           "XERO_PUSH_ENABLED": "true", "PYTHONPATH": str(PROJECT)}
    os.environ.update(env)
    process = None
    try:
        prepare(emulator, env)
        log = (home / "dagster.log").open("w")
        process = subprocess.Popen([str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(free_port()), "-w", "workspace.yaml"],
                                   cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        measure(emulator, env, args)
    finally:
        if process is not None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        emulator.stop()
        print(f"(dagster dev's log and the instance: {home})")


def prepare(emulator: Emulator, env: dict) -> None:
    import dagster as dg

    from definitions import defs as load_definitions
    from resources.settings import ensure_dagster_home
    from resources.warehouse import WarehouseResource
    from sensors.xero import stored_agents
    from sync_assets.ghl import ghl_contacts_reconciliation
    from sync_assets.halo import agent_mappings, halo_agents

    defs = load_definitions()
    ensure_dagster_home()
    with dg.instance_for_test() as scratch:  # not the daemon's instance: its first sync still waits
        assert dg.materialize([halo_agents, agent_mappings, ghl_contacts_reconciliation], resources=defs.resources,
                              instance=scratch).success
    at, sheet_id = newest_approval(emulator)
    cursor = {"approved_at": at, "timesheet_id": sheet_id, "agents": stored_agents(WarehouseResource(url=env["WAREHOUSE_URL"]))}
    for command in (["sensor", "stop", "first_sync"], ["sensor", "cursor", "xero_approvals", "--set", json.dumps(cursor)],
                    ["sensor", "start", "xero_approvals"]):
        subprocess.run([str(DAGSTER), *command, "-w", "workspace.yaml"], cwd=PROJECT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stored_city(engine, contact_id: str) -> str | None:
    import sqlalchemy as sa

    from resources.ghl_tables import ghl_contacts

    with engine.connect() as conn:
        return conn.execute(sa.select(ghl_contacts.c.city).where(ghl_contacts.c.id == contact_id)).scalar()


def measure(emulator: Emulator, env: dict, args) -> None:
    from resources import events
    from resources.warehouse import engine_for
    from sync_assets.xero import open_period

    engine = engine_for(env["WAREHOUSE_URL"])
    first, last = open_period()
    picked = candidates(emulator, first, last, args.approvals)
    assert len(picked) == args.approvals, f"only {len(picked)} unapproved agent-days in {first}..{last}"
    began = time.monotonic()
    while len(sensor_ticks(emulator)) < 2:  # the daemon is up and the approval sensor reading
        assert time.monotonic() - began < 300, "the approval sensor did not read Halo within 5 minutes"
        time.sleep(1)
    print(f"daemon up, approval sensor reading after {time.monotonic() - began:.0f} s; load {os.getloadavg()}", flush=True)
    emulator.reset_requests()
    started = time.monotonic()

    approvals: list[float] = []
    for n, (agent, day) in enumerate(picked):
        t0 = time.monotonic()
        emulator.halo.approve(agent, day)
        events.store_event(engine, events.HALO_APPROVALS, f"bench-approval-{n}", {"date": day.isoformat(), "agent_id": agent})
        while in_xero(emulator, agent, day) < halo_entries(emulator, agent, day):
            assert time.monotonic() - t0 < args.timeout, f"agent {agent} {day}: not in Xero after {args.timeout:.0f} s"
            time.sleep(0.1)
        approvals.append(time.monotonic() - t0)
        print(f"approval {n + 1}: agent {agent} {day}: {approvals[-1]:.1f} s", flush=True)
        time.sleep(max(0.0, args.every - approvals[-1]))
    halo_elapsed = time.monotonic() - started
    reads = sensor_ticks(emulator)

    emulator.reset_requests()
    contacts: list[float] = []
    ids = sorted(emulator.ghl.truth())
    for n in range(args.contacts):
        contact_id, city = ids[n * 7], f"Bench city {n}"
        t0 = time.monotonic()
        emulator.ghl.update(contact_id, city=city)
        events.store_event(engine, events.GHL_CONTACTS, f"bench-contact-{n}",
                           {"type": "ContactUpdate", "locationId": LOCAL_LOCATION_ID, "id": contact_id})
        while stored_city(engine, contact_id) != city:
            assert time.monotonic() - t0 < args.timeout, f"contact {contact_id}: not in the warehouse after {args.timeout:.0f} s"
            time.sleep(0.1)
        contacts.append(time.monotonic() - t0)
        print(f"contact {n + 1}: {contact_id}: {contacts[-1]:.1f} s", flush=True)
        time.sleep(max(0.0, args.every - contacts[-1]))
    ghl_requests = emulator.requests("gohighlevel")

    print(f"\napproval event -> Xero: {len(approvals)} approvals; {percentiles(approvals)}")
    print(f"contact event -> warehouse: {len(contacts)} contacts; {percentiles(contacts)}")
    print(f"approval sensor: {len(reads)} Halo reads in {halo_elapsed:.0f} s for {len(approvals)} events "
          f"(the 45 s timer alone: {halo_elapsed / 45:.0f}); cap {3600 // 45} reads an hour = 1,920 a day + 24 tokens")
    paths = sorted({r.path.rsplit('/', 1)[0] for r in ghl_requests})
    print(f"GoHighLevel: {len(ghl_requests)} requests for {len(contacts)} contact events ({paths})")
    print(f"load average at the end: {os.getloadavg()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
