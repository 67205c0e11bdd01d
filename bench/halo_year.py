"""Benchmark: one fiscal year of HaloPSA timesheets, 50 agents x 250 working days x 6 entries.

    .venv/bin/python bench/halo_year.py [--chunk-days 31,366] [--runs 3]

Each run: the in-process emulator (Halo publishes no rate limit, none applied) reseeded with 50
enabled agents and 6 entries per agent and working day, 2026's weekdays less 11 days off (the
Dutch public holidays and the days between Christmas and New Year) = 250 working days, so
FY2026 holds 75,000 entries and 12,500 timesheets; a fresh PostgreSQL warehouse (created on
127.0.0.1:5432, dropped after); one `dg.materialize` of `halo_timesheets` for FY2026 per chunk
size (`chunk_days`, the days fetched per request pair). Printed per case: requests the emulator
served (token, agents, then a TimesheetEvent and a Timesheet request per chunk) against the
fewest the API allows (a year in one request per endpoint: 4), entries stored, the asset's
`duration_s`, the materialize's wall time and entries per second; then the `duration_s` and rows
written of a second sync of the unchanged year (what each hourly run costs). Medians over `--runs`.
"""

import argparse
import math
import statistics
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from common import QUIET, fresh_postgres

from emulator import Emulator
from emulator import halo as halo_emulator
from resources.halo import HaloPSAResource
from resources.warehouse import WarehouseResource
from sync_assets.fiscal_years import FISCAL_YEARS
from sync_assets.halo import halo_timesheets

YEAR = "FY2026"
FIRST, LAST = date(2026, 1, 1), date(2026, 12, 31)
# Seeded history reaches 400 days back from the anchor: all of 2026.
ANCHOR = datetime(2027, 1, 2, 12, tzinfo=UTC)
AGENTS = 52  # the emulator disables the last two: 50 enabled
ENTRIES_PER_DAY = 6
DAYS_OFF = [date(2026, 1, 1), date(2026, 4, 3), date(2026, 4, 6), date(2026, 4, 27), date(2026, 5, 5), date(2026, 5, 14),
            date(2026, 5, 25), date(2026, 12, 25), date(2026, 12, 28), date(2026, 12, 29), date(2026, 12, 30)]
MINIMUM_REQUESTS = 4  # token, agents, one TimesheetEvent and one Timesheet request for the whole year


def working_days() -> int:
    return sum((FIRST + timedelta(days=n)).weekday() < 5 and FIRST + timedelta(days=n) not in DAYS_OFF
               for n in range((LAST - FIRST).days + 1))


def sync_year(resources: dict, instance: dg.DagsterInstance) -> dict:
    result = dg.materialize([halo_timesheets], resources=resources, instance=instance, partition_key=YEAR, run_config=QUIET)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("halo_timesheets")
    return {k: v.value for k, v in materialization.metadata.items()}


def one_run(chunk_sizes: list[int], seed: int) -> dict[int, dict]:
    emulator = Emulator(seed=seed, anchor=ANCHOR, agents=AGENTS, contacts=10)
    emulator.halo.reseed(entries_per_day=ENTRIES_PER_DAY, days_off=DAYS_OFF)
    emulator.start()
    results = {}
    try:
        for chunk_days in chunk_sizes:
            with fresh_postgres() as url, dg.instance_for_test() as instance:
                instance.add_dynamic_partitions(FISCAL_YEARS.name, [YEAR])
                resources = {"halopsa": HaloPSAResource(base_url=emulator.url, auth_url=f"{emulator.url}/auth", chunk_days=chunk_days,
                                                        client_id=halo_emulator.CLIENT_ID, client_secret=halo_emulator.CLIENT_SECRET),
                             "warehouse": WarehouseResource(url=url)}
                emulator.reset_requests()
                began = time.monotonic()
                meta = sync_year(resources, instance)
                wall = time.monotonic() - began
                requests = len(emulator.requests("halopsa"))
                again = sync_year(resources, instance)  # what every hourly run of an unchanged year costs
            results[chunk_days] = {
                "requests": requests, "requests_metadata": meta["requests"],
                "expected": 2 + 2 * math.ceil(((LAST - FIRST).days + 1) / chunk_days),
                "entries": meta["entries"], "days": meta["days"], "duration_s": meta["duration_s"], "wall_s": wall,
                "entries_per_s": meta["entries"] / meta["duration_s"], "unchanged_duration_s": again["duration_s"],
                "unchanged_written": again["written"],
            }
    finally:
        emulator.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-days", default="31,366", help="comma separated chunk sizes in days (31 is the default)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    chunk_sizes = [int(c) for c in args.chunk_days.split(",")]
    runs = []
    for run in range(1, args.runs + 1):
        runs.append(one_run(chunk_sizes, seed=run))
        print(f"run {run}: " + "; ".join(f"chunk {c} days: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
                                         for c, r in runs[-1].items()), flush=True)
    print(f"\nmedians over {args.runs} runs, {YEAR}: {AGENTS - 2} agents x {working_days()} working days x {ENTRIES_PER_DAY} entries, "
          f"warehouse PostgreSQL; fewest requests the API allows: {MINIMUM_REQUESTS}")
    print(f"{'chunk_days':>10} {'requests':>8} {'entries':>7} {'days':>6} {'duration_s':>10} {'wall_s':>7} {'entries/s':>9} "
          f"{'unchanged: duration_s':>21} {'written':>7}")
    for chunk_days in chunk_sizes:
        cases = [r[chunk_days] for r in runs]
        assert all(c["requests"] == c["requests_metadata"] == c["expected"] for c in cases), cases
        print(f"{chunk_days:>10} {cases[0]['requests']:>8} {cases[0]['entries']:>7} {cases[0]['days']:>6} "
              f"{statistics.median(c['duration_s'] for c in cases):>10.2f} {statistics.median(c['wall_s'] for c in cases):>7.2f} "
              f"{statistics.median(c['entries_per_s'] for c in cases):>9.0f} "
              f"{statistics.median(c['unchanged_duration_s'] for c in cases):>21.2f} {max(c['unchanged_written'] for c in cases):>7}")


if __name__ == "__main__":
    main()
