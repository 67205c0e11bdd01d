"""Alerts to a Slack-compatible webhook (`ALERT_WEBHOOK_URL`): a sync run failed, or an asset's
health light turned red (and back to green).

`run_failure_alerts` posts once per failed run of any job of this code location: the job, the
asset(s) that did not sync, the partition, who started the run, the failure reason (the step
failures' messages, never a stack trace, with every secret setting's value blanked) and a link
to the run. `health_alerts` reads the freshness states the freshness daemon records for every
asset with a freshness policy, keeps the last state seen per asset in its cursor, and posts once
when an asset turns red (FAIL) and once when it is green (PASS) again; ticks in the same state
post nothing.

Posting never fails a tick: without `ALERT_WEBHOOK_URL` the alert goes to the tick's log as a
warning; a webhook that is down or refuses the message is logged as an error with the alert's
text, and the sensors move on (both cursors advance), so one outage does not make every later
tick fail or repeat old alerts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import dagster as dg
import httpx

from resources.http import redact
from resources.settings import SETTINGS, setting
from sync_assets.runs import trigger_from_tags

WEBHOOK_SETTING = "ALERT_WEBHOOK_URL"
TIMEOUT_S = 5.0
MAX_REASON_CHARS = 1500  # a Slack section holds 3,000 characters
RED, GREEN = "FAIL", "PASS"


# -- posting ------------------------------------------------------------------------------------
def webserver_url() -> str:
    return (setting("DAGSTER_WEBSERVER_URL") or "").rstrip("/")


def run_url(run_id: str) -> str:
    return f"{webserver_url()}/runs/{run_id}"


def asset_url(key: dg.AssetKey) -> str:
    return f"{webserver_url()}/assets/" + "/".join(quote(part, safe="") for part in key.path)


def redacted(text: str) -> str:
    """`text` with the value of every secret setting in the environment (and any password inside
    a URL-valued one, e.g. WAREHOUSE_URL's) replaced by `***`."""
    secrets = []
    for s in SETTINGS:
        value = os.environ.get(s.name, "").strip()
        if s.secret and value:
            secrets.append(value)
            try:
                secrets.append(urlsplit(value).password or "")
            except ValueError:
                pass
    return redact(text, sorted(secrets, key=len, reverse=True))


class _RedactSecrets(logging.Filter):
    """httpx logs every request's URL at INFO, and the webhook's URL is a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redacted(record.getMessage()), None
        return True


logging.getLogger("httpx").addFilter(_RedactSecrets())


def _escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post_alert(log, text: str, link: tuple[str, str] | None = None) -> bool:
    """Post `text` (mrkdwn, already escaped) and, as a button, `link` (label, url) to the webhook.
    True when the webhook took it; otherwise logs the alert and why it was not posted."""
    url = os.environ.get(WEBHOOK_SETTING, "").strip()
    if not url:
        log.warning(f"{WEBHOOK_SETTING} is not set, so this alert is only logged:\n{text}")
        return False
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": link[0]}, "url": link[1]}]})
    try:
        with httpx.Client(timeout=TIMEOUT_S, transport=httpx.HTTPTransport(retries=1)) as client:
            response = client.post(url, json={"text": text, "blocks": blocks})
    except httpx.HTTPError as error:  # the message may name the URL, which is a secret
        log.error(f"the alert webhook could not be reached ({type(error).__name__}: {redacted(str(error))}); "
                  f"alert not posted:\n{text}")
        return False
    if response.status_code >= 300:
        log.error(f"the alert webhook answered HTTP {response.status_code} ({redacted(response.text[:200])}); "
                  f"alert not posted:\n{text}")
        return False
    log.info(f"alert posted:\n{text}")
    return True


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


def _innermost_message(error) -> str:
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def failure_reason(step_failures: Sequence[dg.DagsterEvent], run_failure: dg.DagsterEvent | None) -> str:
    """The step failures' messages (a `dg.Failure`'s description, else the exception's own
    message): no stack trace, secrets blanked, at most MAX_REASON_CHARS."""
    reasons = []
    for event in step_failures:
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        reason = described or (_innermost_message(data.error) if data.error else "failed")
        reasons.append(f"{event.step_key}: {reason}" if len(step_failures) > 1 else reason)
    if not reasons and run_failure is not None:
        error = getattr(run_failure.event_specific_data, "error", None)
        reasons.append(_innermost_message(error) if error else run_failure.message or "the run failed")
    text = redacted("\n".join(reasons).strip() or "the run failed")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def run_failure_text(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> str:
    assets = ", ".join(key.to_user_string() for key in assets_not_synced(instance, run)) or "no asset"
    partition = partition_of(run)
    lines = [
        f":red_circle: *Sync failed:* {_escape(assets)}" + (f" (partition `{_escape(partition)}`)" if partition else ""),
        f"job `{_escape(run.job_name)}`, started by {_escape(trigger_from_tags(run.tags))}",
        "*Reason:* " + _escape(reason),
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


def last_success(instance: dg.DagsterInstance, key: dg.AssetKey) -> float | None:
    event = instance.get_latest_materialization_event(key)
    return event.timestamp if event else None


def red_text(key: dg.AssetKey, policy, synced_at: float | None) -> str:
    window = getattr(policy, "fail_window", None)
    why = f"no successful sync for more than {_hours(window)}" if window else "its freshness policy failed"
    return (f":red_circle: *{_escape(key.to_user_string())} is red:* {why} "
            f"(last success: {_utc(synced_at)}).\nAsset: {asset_url(key)}")


def green_text(key: dg.AssetKey, synced_at: float | None) -> str:
    return (f":large_green_circle: *{_escape(key.to_user_string())} is green again:* "
            f"synced at {_utc(synced_at)}.\nAsset: {asset_url(key)}")


def _load_cursor(text: str | None) -> tuple[dict[str, str], set[str]]:
    if not text:
        return {}, set()
    data = json.loads(text)
    return dict(data.get("states", {})), set(data.get("red", []))


def watched_assets(repository_def) -> dict[dg.AssetKey, object]:
    """Every asset of the code location with a freshness policy, and its policy."""
    graph = repository_def.asset_graph
    nodes = (graph.get(key) for key in graph.materializable_asset_keys)
    return {node.key: node.freshness_policy for node in nodes if node.freshness_policy is not None}


@dg.sensor(
    name="health_alerts",
    description="Posts to ALERT_WEBHOOK_URL when an asset's health light turns red, and when it is green again.",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def health_alerts(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Once per transition into FAIL (red), and once on the way back to PASS (green)."""
    policies = watched_assets(context.repository_def)
    records = context.instance.get_freshness_state_records(list(policies))
    # The cursor: the last state seen per asset, and the assets whose red alert has had no
    # green one yet (so red -> yellow -> green still says it recovered).
    seen, red = _load_cursor(context.cursor)
    states: dict[str, str] = {}
    changes = []
    for key in sorted(policies):
        name = key.to_user_string()
        record = records.get(key)
        state = record.freshness_state.value if record else "UNKNOWN"
        states[name] = state
        if state == RED and seen.get(name) != RED:
            post_alert(context.log, red_text(key, policies[key], last_success(context.instance, key)), ("Open the asset", asset_url(key)))
            red.add(name)
            changes.append(f"{name} red")
        elif state == GREEN and name in red:
            post_alert(context.log, green_text(key, last_success(context.instance, key)), ("Open the asset", asset_url(key)))
            red.discard(name)
            changes.append(f"{name} green again")
    context.update_cursor(json.dumps({"states": states, "red": sorted(red & set(states))}, sort_keys=True))
    return dg.SkipReason("alerted: " + ", ".join(changes) if changes else "no asset turned red or recovered")


sensors = [run_failure_alerts, health_alerts]
