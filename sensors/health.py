"""The health light as an asset check the UI shows: a check named `health` on every asset with a
freshness policy, in the lineage view and the catalog (Dagster OSS shows no asset health, and its
lineage view shows partition fill, not freshness).

The check passes while the light is green, fails with severity WARN when it is yellow (the warn
window has passed since the last successful materialization) and with severity ERROR when it is
red (the fail window has passed). Its metadata: the age of the last success in hours, the last
success as ISO text, the light, and the two windows. The light is `resources.health.health()`'s,
the one `workforce-sync status`, the alerts and the report show, so the check cannot disagree
with them. An asset that has never synced has the light `unknown`: it gets no evaluation (the
UI's "not evaluated" says the same), so a new install shows no failed check before its first sync.

Evaluated without runs by the `health_checks` sensor (every 60 s), which reports
`dg.AssetCheckEvaluation`s in its `SensorResult`; the sensor daemon stores them in the event log.
`health_checks_def` declares the checks (one `multi_asset_check` over every asset with a policy,
non-blocking, so a materialization never waits for it); run in a run (the UI's "Execute" or a
materialization that includes checks) it gives the same evaluation from the same light.

Why not Dagster's `build_last_update_freshness_checks` / `build_sensor_for_freshness_checks`:
their sensor launches a run for every evaluation (a run per asset per tick on the run queue and
in the run list, next to the syncs), and their check has one severity, so it cannot say yellow
and red apart; and they would compute a second light beside `resources.health`.

Event-log volume: the sensor reports an asset's evaluation only when its light changed since the
last one it reported (the cursor keeps the lights and when each was reported), and otherwise at
most once an hour per asset, so that the age in the metadata stays current to the hour. Reporting
every tick would write 1,440 events a day per asset (about 11,500 for eight assets), each kept
forever in the event log and listed in the check's history; hourly it is at most 24 a day per
asset plus one per change.
"""

# No `from __future__ import annotations`: Dagster reads the check function's context annotation at runtime.

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

from resources.health import Health, health, policies_of

CHECK_NAME = "health"
REFRESH = timedelta(hours=1)  # an unchanged light is reported again at most this often
SEVERITY = {"yellow": dg.AssetCheckSeverity.WARN, "red": dg.AssetCheckSeverity.ERROR}


def _hours(window) -> float | None:
    if window is None:
        return None
    delta = window.to_timedelta() if hasattr(window, "to_timedelta") else window
    return delta / timedelta(hours=1)


def evaluation(key: dg.AssetKey, policy, light: Health) -> dg.AssetCheckEvaluation | None:
    """The `health` check's evaluation for an asset's light; None for `unknown` (never synced)."""
    if light.light not in ("green", *SEVERITY) or light.last_success is None:
        return None
    synced = datetime.fromtimestamp(light.last_success, UTC)
    age = (get_current_datetime() - synced) / timedelta(hours=1)
    warn, fail = _hours(getattr(policy, "warn_window", None)), _hours(getattr(policy, "fail_window", None))
    metadata = {"age_hours": round(age, 2), "last_success": synced.isoformat(), "light": light.light,
                "warn_window_hours": warn, "fail_window_hours": fail}
    passed = light.light == "green"
    description = (f"last success {age:.1f} h ago: " + (f"under the {warn:g} h warn window" if passed else
                   f"past the {warn:g} h warn window" if light.light == "yellow" else f"past the {fail:g} h fail window"))
    return dg.AssetCheckEvaluation(asset_key=key, check_name=CHECK_NAME, passed=passed,
                                   severity=SEVERITY.get(light.light, dg.AssetCheckSeverity.WARN),
                                   metadata={k: v for k, v in metadata.items() if v is not None}, description=description)


def health_checks_def(policies: Mapping[dg.AssetKey, object]) -> dg.AssetChecksDefinition:
    """The `health` check of every asset in `policies` (asset key -> its freshness policy)."""
    specs = [dg.AssetCheckSpec(CHECK_NAME, asset=key, description=(
        "The health light: passes while the last successful sync is under the warn window; fails "
        "with WARN from the warn window and with ERROR from the fail window. Evaluated by the "
        "health_checks sensor.")) for key in sorted(policies)]

    @dg.multi_asset_check(name="health_checks", specs=specs, can_subset=True)
    def health_checks(context: dg.AssetCheckExecutionContext):
        selected = [check.asset_key for check in context.selected_asset_check_keys]
        lights = health(context.instance, {key: policies[key] for key in selected})
        for key in selected:
            found = evaluation(key, policies[key], lights[key])
            if found is not None:  # unknown: no result, as from the sensor
                yield dg.AssetCheckResult(asset_key=key, check_name=CHECK_NAME, passed=found.passed, severity=found.severity,
                                          metadata=found.metadata, description=found.description)

    return health_checks


@dg.sensor(
    name="health_checks",
    description="Reports the health check of every asset with a freshness policy when its light changes, and hourly.",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def health_checks_sensor(context: dg.SensorEvaluationContext):
    """Evaluates the `health` checks without a run: an evaluation per asset whose light changed
    since the last one reported, or whose last one is an hour old."""
    policies = {key: policy for key, policy in policies_of(context.repository_def.asset_graph).items() if policy is not None}
    lights = health(context.instance, policies)
    cursor = json.loads(context.cursor) if context.cursor else {}
    reported, at = cursor.get("lights", {}), cursor.get("at", {})
    now = get_current_datetime().timestamp()
    events = []
    for key in sorted(policies):
        name, found = key.to_user_string(), evaluation(key, policies[key], lights[key])
        if found is None:
            continue
        if reported.get(name) == lights[key].light and now - at.get(name, 0) < REFRESH.total_seconds():
            continue
        events.append(found)
        reported[name], at[name] = lights[key].light, now
    next_cursor = json.dumps({"lights": reported, "at": at}, sort_keys=True)
    if not events:
        return dg.SensorResult(skip_reason="no light changed and none is an hour old", cursor=next_cursor)
    return dg.SensorResult(asset_events=events, cursor=next_cursor)


sensors = [health_checks_sensor]
