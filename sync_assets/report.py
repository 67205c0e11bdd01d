"""The daily sync report: per sync, one day's runs read back from the Dagster instance, and the
day's employee changes from the warehouse, as one materialization the asset page shows.

Every number comes from the run history (run records, their materialization and step-failure
events), not from a counter kept on the side, so the report says what the UI's run list says.
The `sync_report_morning` schedule (schedules/report.py) makes yesterday's report each morning
and posts it to ALERT_WEBHOOK_URL; a report made from the UI is not posted unless asked.
"""

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

from resources.employes_tables import employes_employee_changes as changes_table
from resources.halo import TIME_KINDS
from resources.halo_tables import halo_time_entries as entries_table
from resources.health import health, policies_of
from resources.organisations import asset_key, key_prefix
from resources.settings import history_start, setting
from resources.warehouse import WarehouseResource
from resources.webhook import escape, failure_reason, post_alert
from sync_assets.runs import trigger_of

GROUP = "operations"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
RUNS_READ = 5000  # at most this many runs a day are summarised (the default schedules make ~100)
MAX_CHANGES_LISTED = 200


class ReportConfig(dg.Config):
    post: bool = False
    """Post the report to ALERT_WEBHOOK_URL (the morning schedule sets this)."""


@dataclass
class SyncDay:
    """One sync's day: what its runs did."""

    runs: int = 0
    successes: int = 0
    failures: list[str] = field(default_factory=list)  # one reason per failed run
    rows_written: int = 0
    requests: int = 0
    throttled_s: float = 0.0
    durations_s: list[float] = field(default_factory=list)

    def p(self, share: float) -> float | None:
        """The nearest-rank percentile of the runs' durations (None without runs)."""
        if not self.durations_s:
            return None
        ordered = sorted(self.durations_s)
        return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _metadata_number(metadata: dict, name: str) -> float:
    value = metadata.get(name)
    value = getattr(value, "value", value)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def day_of_runs(instance: dg.DagsterInstance, start: datetime, end: datetime) -> dict[dg.AssetKey, SyncDay]:
    """Per asset, the finished runs created in [start, end) that planned it: a run that
    materialized it is a success, one that planned it and did not is a failure with its reason.
    Rows, requests and throttled seconds come from the materialization's metadata, or from the
    failure's (the syncs attach their request counts to a `dg.Failure`)."""
    days: dict[dg.AssetKey, SyncDay] = {}
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED, created_after=start, created_before=end), limit=RUNS_READ)
    for record in records:
        run = record.dagster_run
        events = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(run.run_id, of_type={
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}).records]
        planned = {e.asset_key for e in events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED}
        materialized = {e.asset_key: e.step_materialization_data.materialization.metadata for e in events
                        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
        failed = run.status == dg.DagsterRunStatus.FAILURE
        step_failures = [e for e in events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        run_failure = next((e for e in events if e.event_type == dg.DagsterEventType.RUN_FAILURE), None)
        duration = (record.end_time - record.start_time) if record.start_time and record.end_time else None
        for key in planned | set(materialized):
            if key not in materialized and not failed:
                continue  # planned and not materialized by a run that succeeded: skipped, not failed
            day = days.setdefault(key, SyncDay())
            day.runs += 1
            if duration is not None:
                day.durations_s.append(duration)
            if key in materialized:
                metadata = materialized[key]
                day.successes += 1
            else:
                own = [e for e in step_failures if e.step_key == key.to_python_identifier()]
                day.failures.append(failure_reason(own or step_failures, run_failure))
                failure = own[0].step_failure_data.user_failure_data if own else None
                metadata = failure.metadata if failure else {}
            day.rows_written += int(_metadata_number(metadata, "written"))
            day.requests += int(_metadata_number(metadata, "requests"))
            day.throttled_s += _metadata_number(metadata, "throttled_s")
    return days


def employee_changes(warehouse: WarehouseResource, day: date) -> list[str]:
    """The day's rows of `employes_employee_changes`, one readable line each."""
    table = changes_table
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.snapshot_date == day)
                            .order_by(table.c.employee_number, table.c.employee_id, table.c.field)).mappings().all()
    lines = []
    for row in rows:
        who = f"employee {row['employee_number'] or row['employee_id']}"
        if row["field"] == "employee":
            lines.append(f"{who}: {row['new_value']}")
        else:
            lines.append(f"{who}: {row['field']} {row['old_value'] or '—'} → {row['new_value'] or '—'}")
    return lines


def hours_by_kind(warehouse: WarehouseResource, day: date) -> dict[str, float]:
    """The day's Halo time (work date `day`, as the warehouse holds it) in hours per kind:
    work, break, leave, other. Only work is billed."""
    e = entries_table
    with warehouse.engine.connect() as conn:
        minutes = dict(conn.execute(sa.select(e.c.time_kind, sa.func.sum(e.c.minutes))
                                    .where(e.c.work_date == day, e.c.deleted_at.is_(None)).group_by(e.c.time_kind)).all())
    return {kind: round((minutes.get(kind) or 0) / 60, 2) for kind in TIME_KINDS}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(days: dict[str, SyncDay], lights: dict[str, str]) -> str:
    rows = ["| sync | light | runs | ok | failed | rows written | requests | throttled s | p50 s | p95 s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in days.items():
        rows.append(f"| {name} | {lights.get(name, '-')} | {d.runs} | {d.successes} | {len(d.failures)} | {d.rows_written} | "
                    f"{d.requests} | {d.throttled_s:.1f} | {_seconds(d.p(0.5))} | {_seconds(d.p(0.95))} |")
    return "\n".join(rows)


def failures_text(days: dict[str, SyncDay]) -> str:
    lines = [f"- **{name}**: {reason.splitlines()[0]}" for name, d in days.items() for reason in d.failures]
    return "\n".join(lines) or "No failed runs."


def webhook_text(day: date, days: dict[str, SyncDay], lights: dict[str, str], changes: list[str]) -> str:
    """The report as Slack mrkdwn: one line per sync, failures, employee changes."""
    lines = [f"*Sync report for {day}*"]
    for name, d in days.items():
        lines.append(f"• `{escape(name)}` {lights.get(name, '-')}: {d.successes}/{d.runs} runs ok, {d.rows_written} rows, "
                     f"{d.requests} requests, p95 {_seconds(d.p(0.95))} s")
    failed = [f"• `{escape(name)}`: {escape(r.splitlines()[0])}" for name, d in days.items() for r in d.failures]
    if failed:
        lines += ["*Failures:*", *failed[:20]]
    lines += [f"*Employee changes:* {len(changes) or 'none'}", *(f"• {escape(c)}" for c in changes[:20])]
    return "\n".join(lines)


def make_report(context: dg.AssetExecutionContext, config: ReportConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The partition's report: the asset `sync_report`."""
    day = date.fromisoformat(context.partition_key)
    start, end = context.partition_time_window
    by_key = day_of_runs(context.instance, start, end)
    # The syncs and their freshness policies, from the run's own job: its asset graph's source is
    # the whole code location's (`context.repository_def` is the same in a deployed run, but is
    # not set when a job is executed in process).
    syncs = health(context.instance, policies_of(context.job_def.asset_layer.asset_graph.source_asset_graph))
    lights = {key.to_user_string(): sync.light for key, sync in syncs.items()}
    days = {key.to_user_string(): by_key.get(key, SyncDay()) for key in syncs if key != context.asset_key}
    changes = employee_changes(warehouse, day)
    hours = hours_by_kind(warehouse, day)
    shown = changes[:MAX_CHANGES_LISTED]
    more = f"\n- … and {len(changes) - len(shown)} more" if len(changes) > len(shown) else ""
    numbers = {}
    for name, d in days.items():
        numbers.update({f"{name}/runs": d.runs, f"{name}/failures": len(d.failures), f"{name}/rows_written": d.rows_written,
                        f"{name}/requests": d.requests, f"{name}/throttled_s": round(d.throttled_s, 2)})
        if d.durations_s:
            numbers.update({f"{name}/p50_s": round(d.p(0.5), 3), f"{name}/p95_s": round(d.p(0.95), 3)})
    if config.post:
        post_alert(context.log, webhook_text(day, days, lights, changes))
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(markdown_table(days, lights)),
        "failures": dg.MetadataValue.md(failures_text(days)),
        "employee_changes": dg.MetadataValue.md("\n".join(f"- {c}" for c in shown) + more if changes else "No employee changes."),
        "employee_change_count": len(changes),
        "halo_hours": dg.MetadataValue.md(" · ".join(f"{kind} {value:g} h" for kind, value in hours.items())),
        **{f"halo/{kind}_hours": value for kind, value in hours.items()},
        "runs": sum(d.runs for d in days.values()),
        "failed_runs": sum(len(d.failures) for d in days.values()),
        **numbers,
        "window_utc": f"{start.astimezone(UTC):%Y-%m-%d %H:%M}..{end.astimezone(UTC):%Y-%m-%d %H:%M}",
        "made_at_utc": get_current_datetime().isoformat(timespec="seconds"),
        "triggered_by": trigger_of(context),
    })


def daily() -> dg.DailyPartitionsDefinition:
    """The days in SYNC_TIMEZONE, read when the code location is built (never at import).
    Partition D covers D 00:00 to D+1 00:00, so it is complete from midnight. From the day before
    the history starts (`history_start`): a first sync makes yesterday's report, which must be a
    partition on the day of installation."""
    return dg.DailyPartitionsDefinition(start_date=(history_start() - timedelta(days=1)).strftime("%Y-%m-%d"),
                                        timezone=setting("SYNC_TIMEZONE"))


def report_asset() -> dg.AssetsDefinition:
    """The asset `sync_report`, built when the code location is: its partitions read SYNC_TIMEZONE."""

    @dg.asset(key_prefix=key_prefix(), partitions_def=daily(), group_name=GROUP, kinds={"dagster", "sql"})
    def sync_report(context: dg.AssetExecutionContext, config: ReportConfig, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """The day's sync report: per sync, its runs, successes, failures with their reasons, rows
        written, requests, throttled seconds, p50/p95 run duration and current health light (a table
        on the asset page, and numbers plotted per sync), the day's Halo hours per kind of time (work,
        break, leave, other), and the day's employee changes.

        Partition D covers D 00:00 to 24:00 in SYNC_TIMEZONE, by run creation time; the light is the
        one `workforce-sync status` and the alerts show when the report is made (`resources.health`).
        The morning schedule posts it to ALERT_WEBHOOK_URL."""
        return make_report(context, config, warehouse)

    return sync_report


# The job's config turns posting on: a report materialized from the UI is not posted. By key: the
# job takes the asset's partitions when the code location resolves it.
sync_report_job = dg.define_asset_job(
    "sync_report_job", selection=[asset_key("sync_report")], config={"ops": {asset_key("sync_report").to_python_identifier(): {"config": {"post": True}}}}
)


def assets() -> list[dg.AssetsDefinition]:
    return [report_asset()]


jobs = [sync_report_job]
