"""Benchmark: provider requests and rows read per day under the default schedules and sensors.

    .venv/bin/python bench/steady_state.py [--contacts 2000]

The emulator (seed 7, its default 24 agents and 40 employees, `--contacts` contacts, no rate
limits) on the tests' anchor day, a fresh PostgreSQL warehouse and the code location's own
definitions in local mode (`definitions.defs`, so the schedules, sensors and resources are the
ones a deployment runs). Dagster's clock is frozen on the anchor day. Every schedule is
evaluated at its tick and its run requests executed once to fill the warehouse, then again to
measure a steady-state run: requests the emulator served per provider (token requests included)
and rows read (the `fetched` metadata of the run's materializations). Runs per day come from
each schedule's cron; the approval sensor ticks every XERO_APPROVAL_POLL_SECONDS (measured on a
second tick, the first being a new installation's catch-up). Per day = per run x runs per day.

The approval sensor's rows are the timesheets of the open period it reads on every tick.
The last line puts the whole-year run (what `halo_timesheets_hourly` read every hour until the
open-period change; the nightly schedule's run is that same run) in place of the hourly one,
the sensor as it is now; the sensor's own before (3 requests a tick every 120 s) is in
bench/README.md, measured by this script at 620b4d9.
"""

import argparse
import os
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

from common import QUIET, fresh_postgres
from cryptography.fernet import Fernet

from emulator import Emulator

ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the tests' anchor (tests/conftest.py)
NOW = ANCHOR + timedelta(hours=3)
DAY = 86400


def runs_per_day(cron: str, timezone: str | None) -> int:
    """Ticks of `cron` in the anchor's day."""
    from dagster._utils.schedules import cron_string_iterator

    start = datetime(NOW.year, NOW.month, NOW.day, tzinfo=UTC)
    count = 0
    for moment in cron_string_iterator(start.timestamp(), cron, timezone or "UTC"):
        if moment >= start + timedelta(days=1):
            return count
        count += 1
    return count


def last_tick(schedule) -> datetime:
    """The schedule's latest tick at or before NOW."""
    from dagster._utils.schedules import cron_string_iterator

    return next(cron_string_iterator(NOW.timestamp(), schedule.cron_schedule, schedule.execution_timezone or "UTC", ascending=False))


def measure(emulator: Emulator, execute) -> tuple[Counter, int]:
    """(requests per provider, rows read) of `execute()`, which returns the run's materializations' metadata."""
    emulator.reset_requests()
    rows = sum(int(m.get("fetched", 0)) for m in execute())
    return Counter(s.provider for s in emulator.requests()), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2000)
    args = parser.parse_args()
    emulator = Emulator(seed=7, anchor=ANCHOR, contacts=args.contacts, rate_limits=False)
    emulator.start()
    try:
        with fresh_postgres() as url:
            os.environ.update({"SYNC_ENV": "local", "EMULATOR_URL": emulator.url, "WAREHOUSE_URL": url,
                               "XERO_TOKEN_KEY": Fernet.generate_key().decode()})
            report(emulator)
    finally:
        emulator.stop()


def report(emulator: Emulator) -> None:
    import dagster as dg
    from dagster._core.test_utils import freeze_time

    from definitions import defs as load_definitions
    defs = load_definitions()
    from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar

    lines = []  # (provider, what, runs/day, requests/run, rows/run)
    with dg.instance_for_test() as instance, freeze_time(NOW):
        instance.add_dynamic_partitions(FISCAL_YEARS.name, [FiscalCalendar.from_settings().key_for(NOW.date())])

        def execute(request: dg.RunRequest, job_name: str):
            def run():
                job = defs.resolve_job_def(job_name)
                config = {**(request.run_config or {}), **QUIET}
                result = job.execute_in_process(instance=instance, run_config=config, partition_key=request.partition_key,
                                                tags=request.tags, raise_on_error=False)
                assert result.success, job_name
                return [{k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
                        for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
            return run

        schedules = sorted(defs.get_repository_def().schedule_defs, key=lambda s: s.name)
        # Dependency order for the first pass: reference data before the syncs that read it.
        schedules.sort(key=lambda s: s.name != "halo_agents_hourly")
        for phase in ("fill", "measure"):
            for schedule in schedules:
                tick_at = last_tick(schedule)
                context = dg.build_schedule_context(instance=instance, scheduled_execution_time=tick_at,
                                                    repository_def=defs.get_repository_def())
                result = schedule.evaluate_tick(context)
                for request in result.run_requests or []:
                    counts, rows = measure(emulator, execute(request, schedule.job_name))
                    if phase == "measure":
                        per_day = runs_per_day(schedule.cron_schedule, schedule.execution_timezone)
                        # Rows go to the provider the run asked most of (the one it syncs).
                        main = counts.most_common(1)[0][0] if counts else "(none)"
                        for provider in counts or {"(none)": 0}:
                            lines.append((provider, schedule.name, per_day, counts[provider], rows if provider == main else 0))
        sensor = defs.resolve_sensor_def("xero_approvals")
        cursor = None
        for phase in ("fill", "measure"):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
            emulator.reset_requests()
            result = sensor.evaluate_tick(context)
            cursor = result.cursor or cursor
            served = Counter(s.provider for s in emulator.requests())
            token_kept = not any("/token" in s.path for s in emulator.requests("halopsa"))
        ticks = DAY // sensor.minimum_interval_seconds
        for provider, count in served.items():
            lines.append((provider, "xero_approvals (sensor tick)", ticks, count, sheets_per_tick(defs) if provider == "halopsa" else 0))
        if token_kept:
            lines.append(("halopsa", "xero_approvals (its token, kept 1 h)", 24, 1, 0))
    print_report(lines)


def sheets_per_tick(defs) -> int:
    """The timesheets one approval-sensor tick reads: the open period's, every agent's."""
    from resources.warehouse import WarehouseResource
    from sensors.xero import stored_agents
    from sync_assets.xero import open_period

    with defs.resources["halopsa"].client() as halo:
        return len(halo.timesheets(*open_period(), stored_agents(WarehouseResource(url=os.environ["WAREHOUSE_URL"]))))


def print_report(lines: list[tuple]) -> None:
    print(f"{'provider':<12} {'schedule / sensor':<38} {'runs/day':>8} {'requests/run':>12} {'rows/run':>9} "
          f"{'requests/day':>12} {'rows/day':>10}")
    totals: dict[str, Counter] = {}
    for provider, what, per_day, requests, rows in sorted(lines):
        print(f"{provider:<12} {what:<38} {per_day:>8} {requests:>12} {rows:>9} {per_day * requests:>12} {per_day * rows:>10}")
        totals.setdefault(provider, Counter()).update({"requests": per_day * requests, "rows": per_day * rows})
    print("\nper provider and day (after):")
    for provider, total in sorted(totals.items()):
        print(f"  {provider:<12} requests {total['requests']:>8}  rows read {total['rows']:>9}")
    halo = {what: (requests, rows) for provider, what, _, requests, rows in lines if provider == "halopsa"}
    if "halo_timesheets_nightly" in halo:
        (year_requests, year_rows), (open_requests, open_rows) = halo["halo_timesheets_nightly"], halo["halo_timesheets_hourly"]
        before_requests = totals["halopsa"]["requests"] - 24 * open_requests - year_requests + 24 * year_requests
        before_rows = totals["halopsa"]["rows"] - 24 * open_rows - year_rows + 24 * year_rows
        print(f"  halopsa had the hourly run read the whole year (no nightly run; sensor as now): requests {before_requests:>8}  rows read {before_rows:>9}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
