"""Benchmark: from an approval in Halo to its entries in Xero, under the real daemon.

    .venv/bin/python bench/approval_latency.py [--approvals 24] [--every 12]

The emulator in this process (anchored now, 12 agents, its realistic rate limits), a fresh SQLite
warehouse and `dagster dev` (UI, daemon and code server, as `scripts/start` runs them) on a
fresh DAGSTER_HOME with the instance settings `ensure_dagster_home` writes, and every setting at
its default except XERO_PUSH_ENABLED=true. Before the daemon starts: the agents and mappings are
synced into the warehouse (the hourly `halo_agents` sync's job), the sensor `first_sync` is
stopped (it would sync every asset of the empty instance meanwhile) and the approval sensor's
cursor set to Halo's newest approval (so it does not first catch up on the open period's).

Then one unapproved agent-day with entries is approved every `--every` seconds, spread over the
open period's work dates, and the time until Xero holds as many entries for that user and date
as Halo has is taken for each. Printed: p50 / p95 / max, and the approval sensor's Halo requests:
its ticks (its `/api/Timesheet` requests over the open period; a push run asks for one day) and
the interval between them, so requests per day = ticks per day (+ 24 tokens: the token is kept
for its hour).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.fernet import Fernet

from emulator import Emulator
from emulator import xero as xero_emulator

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_xero(emulator: Emulator, agent: int, day: date) -> int:
    user = xero_emulator.user_id(agent)
    return sum(1 for e in emulator.xero.entries().values() if e["userId"] == user and e["dateUtc"][:10] == day.isoformat())


def halo_entries(emulator: Emulator, agent: int, day: date) -> int:
    """The agent's work entries of the day: what reaches Xero (breaks and leave never do)."""
    return sum(1 for i, e in emulator.halo.entries().items()
               if e["agent_id"] == agent and e["start_date"][:10] == day.isoformat() and emulator.halo.kind(i) == "work")


def candidates(emulator: Emulator, first: date, last: date, count: int) -> list[tuple[int, date]]:
    """Unapproved agent-days with entries, before today, spread over the open period's dates."""
    from resources.halo import timesheet_row

    by_day: dict[date, list[int]] = {}
    for (agent, day), sheet in sorted(emulator.halo.timesheets().items()):
        if first <= day < last and not timesheet_row(sheet, "")["approved"] and halo_entries(emulator, agent, day):
            by_day.setdefault(day, []).append(agent)
    picked = []
    while len(picked) < count and any(by_day.values()):
        for day in sorted(by_day, reverse=True):
            if by_day[day] and len(picked) < count:
                picked.append((by_day[day].pop(0), day))
    return picked


def newest_approval(emulator: Emulator) -> tuple[str, int]:
    from resources.halo import timesheet_row

    rows = [timesheet_row(s, "") for s in emulator.halo.timesheets().values()]
    at, sheet_id = max((r["submitted_at"], r["id"]) for r in rows if r["approved"] and r["submitted_at"])
    return at.isoformat(), sheet_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approvals", type=int, default=24)
    parser.add_argument("--every", type=float, default=12.0, help="seconds between approvals")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the last approval")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="approval-bench-"))
    emulator = Emulator(seed=7, anchor=datetime.now(UTC), agents=12, contacts=50, employees=10)
    emulator.start()
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster_home"), "SYNC_ENV": "local", "EMULATOR_URL": emulator.url,
           "WAREHOUSE_URL": f"sqlite:///{home}/warehouse.db", "XERO_TOKEN_KEY": Fernet.generate_key().decode(),
           "XERO_PUSH_ENABLED": "true"}
    os.environ.update(env)
    dagster = PROJECT / ".venv/bin/dagster"
    process = None
    try:
        prepare(emulator, dagster, env)
        log = (home / "dagster.log").open("w")
        process = subprocess.Popen([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(free_port()), "-w", "workspace.yaml"],
                                   cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        measure(emulator, args)
    finally:
        if process is not None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
        emulator.stop()
        print(f"(dagster dev's log and the instance: {home})")


def prepare(emulator: Emulator, dagster: Path, env: dict) -> None:
    import dagster as dg

    from definitions import defs as load_definitions
    defs = load_definitions()
    from resources.settings import ensure_dagster_home
    from resources.warehouse import WarehouseResource
    from sensors.xero import stored_agents
    from sync_assets.halo import agent_mappings, halo_agents

    ensure_dagster_home()
    with dg.instance_for_test() as scratch:  # not the daemon's instance: its first sync still waits
        assert dg.materialize([halo_agents, agent_mappings], resources=defs.resources, instance=scratch).success
    at, sheet_id = newest_approval(emulator)
    cursor = {"approved_at": at, "timesheet_id": sheet_id, "agents": stored_agents(WarehouseResource(url=env["WAREHOUSE_URL"]))}
    # Setting a cursor leaves the sensor's state stopped: start it again.
    for command in (["sensor", "stop", "first_sync"], ["sensor", "cursor", "xero_approvals", "--set", json.dumps(cursor)],
                    ["sensor", "start", "xero_approvals"]):
        subprocess.run([str(dagster), *command, "-w", "workspace.yaml"], cwd=PROJECT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sensor_ticks(emulator: Emulator) -> list[float]:
    """When the approval sensor asked Halo for the open period's timesheets (a push run asks
    for its own day)."""
    from sync_assets.xero import open_period

    first = open_period()[0].isoformat()
    return [s.at for s in emulator.requests("halopsa", "/api/Timesheet") if s.query.get("start_date", "")[:10] == first]


def measure(emulator: Emulator, args) -> None:
    from sync_assets.xero import open_period

    first, last = open_period()
    picked = candidates(emulator, first, last, args.approvals)
    assert len(picked) == args.approvals, f"only {len(picked)} unapproved agent-days in {first}..{last}"
    began = time.monotonic()
    while len(sensor_ticks(emulator)) < 2:  # the daemon is up and the sensor ticking
        assert time.monotonic() - began < 300, "the approval sensor did not tick within 5 minutes"
        time.sleep(1)
    print(f"daemon up, sensor ticking after {time.monotonic() - began:.0f} s", flush=True)
    emulator.reset_requests()
    started = time.monotonic()
    pending: dict[tuple[int, date], float] = {}
    latencies: dict[tuple[int, date], float] = {}
    queue = list(picked)
    next_at = time.monotonic()
    deadline = None
    while queue or pending:
        now = time.monotonic()
        if queue and now >= next_at:
            agent, day = queue.pop(0)
            pending[(agent, day)] = time.monotonic()
            emulator.halo.approve(agent, day)
            next_at += args.every
            if not queue:
                deadline = now + args.timeout
        for (agent, day), t0 in list(pending.items()):
            if in_xero(emulator, agent, day) >= halo_entries(emulator, agent, day):
                latencies[(agent, day)] = time.monotonic() - t0
                del pending[(agent, day)]
                print(f"agent {agent} {day}: {latencies[(agent, day)]:.1f} s", flush=True)
        if deadline and time.monotonic() > deadline:
            print(f"not in Xero after {args.timeout:.0f} s: {sorted(pending)}")
            break
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    ticks = sensor_ticks(emulator)
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    values = sorted(latencies.values())
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    print(f"\n{len(values)} of {len(picked)} approvals reached Xero; p50 {statistics.median(values):.1f} s, "
          f"p95 {p95:.1f} s, max {values[-1]:.1f} s")
    interval = statistics.median(gaps) if gaps else float("nan")
    print(f"approval sensor: {len(ticks)} ticks in {elapsed:.0f} s, median {interval:.1f} s apart, one Halo request each: "
          f"{86400 / interval:.0f} requests/day + 24 tokens")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
