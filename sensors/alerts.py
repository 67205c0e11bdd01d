"""Alerts to a Slack-compatible webhook (`ALERT_WEBHOOK_URL`): a sync run failed, or an asset's
health light turned red (and back to green).

`run_failure_alerts` posts once per failed run of any job of this code location: the job, the
asset(s) that did not sync, the partition, who started the run, the failure reason (the step
failures' messages, never a stack trace, with every secret setting's value blanked) and a link
to the run. `health_alerts` reads the health light of every asset with a freshness policy from
`resources.health` (the one light `workforce-sync status` and the daily report show), keeps the
last light seen per asset in its cursor, and posts once when an asset turns red and once when it
is green again; ticks in the same light post nothing. The posting itself is `resources.webhook`'s.

Posting never fails a tick: without `ALERT_WEBHOOK_URL` the alert goes to the tick's log as a
warning; a webhook that is down or refuses the message is logged as an error with the alert's
text, and the sensors move on (both cursors advance), so one outage does not make every later
tick fail or repeat old alerts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from resources.health import LIGHTS, health, policies_of
from resources.webhook import asset_url, escape, failure_reason, post_alert, run_url
from sync_assets.runs import trigger_from_tags

RED, GREEN = "red", "green"


# -- failed runs --------------------------------------------------------------------------------
def assets_not_synced(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.AssetKey]:
    """The assets a failed run planned and did not materialize; all of the run's assets if it
    failed before planning any."""
    records = instance.get_records_for_run(
        run.run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_MATERIALIZATION}
    ).records
    planned, done = set(), set()
    for record in records:
        event = record.event_log_entry.dagster_event
        (planned if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED else done).add(event.asset_key)
    return sorted((planned - done) or planned or set(run.asset_selection or ()))


def partition_of(run: dg.DagsterRun) -> str | None:
    tags = run.tags
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    return f"{start}...{end}" if start and end else None


def run_failure_text(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> str:
    assets = ", ".join(key.to_user_string() for key in assets_not_synced(instance, run)) or "no asset"
    partition = partition_of(run)
    lines = [
        f":red_circle: *Sync failed:* {escape(assets)}" + (f" (partition `{escape(partition)}`)" if partition else ""),
        f"job `{escape(run.job_name)}`, started by {escape(trigger_from_tags(run.tags))}",
        "*Reason:* " + escape(reason),
        f"Run: {run_url(run.run_id)}",
    ]
    return "\n".join(lines)


@dg.run_failure_sensor(
    name="run_failure_alerts",
    description="Posts each failed run of this code location to ALERT_WEBHOOK_URL (or logs it when unset).",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    """One alert per failed run: its assets, partition, reason and a link to the run."""
    run = context.dagster_run
    reason = failure_reason(context.get_step_failure_events(), context.failure_event)
    post_alert(context.log, run_failure_text(context.instance, run, reason), ("Open the run", run_url(run.run_id)))


# -- the health light ---------------------------------------------------------------------------
def _hours(window) -> str:
    delta = window.to_timedelta() if hasattr(window, "to_timedelta") else window
    hours = delta / timedelta(hours=1)
    return f"{hours:g} hours" if hours != 1 else "1 hour"


def _utc(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC") if timestamp else "never"


def red_text(key: dg.AssetKey, policy, synced_at: float | None) -> str:
    window = getattr(policy, "fail_window", None)
    why = f"no successful sync for more than {_hours(window)}" if window else "its freshness policy failed"
    return (f":red_circle: *{escape(key.to_user_string())} is red:* {why} "
            f"(last success: {_utc(synced_at)}).\nAsset: {asset_url(key)}")


def green_text(key: dg.AssetKey, synced_at: float | None) -> str:
    return (f":large_green_circle: *{escape(key.to_user_string())} is green again:* "
            f"synced at {_utc(synced_at)}.\nAsset: {asset_url(key)}")


def _load_cursor(text: str | None) -> tuple[dict[str, str], set[str]]:
    """(the light last seen per asset, the assets alerted red and not yet green again). A cursor
    written before the lights came from `resources.health` holds freshness states (FAIL, PASS):
    read as their lights, so an upgrade neither repeats nor drops an alert."""
    if not text:
        return {}, set()
    data = json.loads(text)
    return {name: LIGHTS.get(value, value) for name, value in data.get("states", {}).items()}, set(data.get("red", []))


def watched_assets(repository_def) -> dict[dg.AssetKey, object]:
    """Every asset of the code location with a freshness policy, and its policy."""
    return {key: policy for key, policy in policies_of(repository_def.asset_graph).items() if policy is not None}


@dg.sensor(
    name="health_alerts",
    description="Posts to ALERT_WEBHOOK_URL when an asset's health light turns red, and when it is green again.",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def health_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Once per transition into red, and once on the way back to green: the light `workforce-sync
    status` shows (`resources.health`), so a stopped freshness daemon cannot hide a dead sync."""
    policies = watched_assets(context.repository_def)
    lights = health(context.instance, policies)
    # The cursor: the last light seen per asset, and the assets whose red alert has had no
    # green one yet (so red -> yellow -> green still says it recovered).
    seen, red = _load_cursor(context.cursor)
    states: dict[str, str] = {}
    changes = []
    for key in sorted(policies):
        name, light, synced_at = key.to_user_string(), lights[key].light, lights[key].last_success
        states[name] = light
        if light == RED and seen.get(name) != RED:
            post_alert(context.log, red_text(key, policies[key], synced_at), ("Open the asset", asset_url(key)))
            red.add(name)
            changes.append(f"{name} red")
        elif light == GREEN and name in red:
            post_alert(context.log, green_text(key, synced_at), ("Open the asset", asset_url(key)))
            red.discard(name)
            changes.append(f"{name} green again")
    context.update_cursor(json.dumps({"states": states, "red": sorted(red & set(states))}, sort_keys=True))
    return dg.SkipReason("alerted: " + ", ".join(changes) if changes else "no asset turned red or recovered")


sensors = [run_failure_alerts, health_alerts]
