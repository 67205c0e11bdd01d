"""The health light, computed in one place: `workforce-sync status` (and `--json`, and
`run-once`'s summary), the `health_alerts` sensor and the daily report all call `health()`.

The light is what Dagster's freshness daemon recorded for the asset's freshness policy (PASS,
WARN, FAIL: green, yellow, red), or what the age of the asset's last successful
materialization says against the policy's windows, whichever is worse: a stopped daemon
leaves its last state behind, and that must not keep a dead sync green. An asset that has never
synced and has no recorded state is `unknown` (not red); one without a policy has no light (`-`).

It lives under `resources/` (it imports nothing of ours) so that the report (an asset), the
alerts (sensors) and the CLI (on top of both) can all import it without a circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

LIGHTS = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "UNKNOWN": "unknown"}
SEVERITY = ["unknown", "green", "yellow", "red"]  # the worse of two lights is the later one
NO_LIGHT = "-"  # an asset without a freshness policy


@dataclass(frozen=True)
class Health:
    light: str  # green / yellow / red / unknown, or NO_LIGHT
    last_success: float | None  # timestamp of the last successful materialization


def _window(value) -> timedelta | None:
    """A policy's window as a timedelta (Dagster keeps them as SerializableTimeDelta)."""
    if value is None:
        return None
    return value.to_timedelta() if hasattr(value, "to_timedelta") else value


def light_by_age(policy, last_success: float | None) -> str:
    """The light the age of the last success gives against a time-window policy's windows;
    `unknown` without a success or for a policy without windows (a cron policy)."""
    fail, warn = _window(getattr(policy, "fail_window", None)), _window(getattr(policy, "warn_window", None))
    if last_success is None or fail is None:
        return "unknown"
    age = get_current_datetime() - datetime.fromtimestamp(last_success, UTC)
    if age >= fail:
        return "red"
    if warn is not None and age >= warn:
        return "yellow"
    return "green"


def health(instance: dg.DagsterInstance, policies: Mapping[dg.AssetKey, object]) -> dict[dg.AssetKey, Health]:
    """Each asset's light and last success, for `policies` (asset key -> its `freshness_policy`,
    None for an asset without one), in the order given."""
    states = instance.get_freshness_state_records([key for key, policy in policies.items() if policy is not None])
    out = {}
    for key, policy in policies.items():
        event = instance.get_latest_materialization_event(key)
        last_success = event.timestamp if event else None
        if policy is None:
            out[key] = Health(NO_LIGHT, last_success)
            continue
        record = states.get(key)
        recorded = LIGHTS.get(record.freshness_state.value, "unknown") if record else "unknown"
        out[key] = Health(max(recorded, light_by_age(policy, last_success), key=SEVERITY.index), last_success)
    return out


def policies_of(asset_graph) -> dict[dg.AssetKey, object]:
    """Every materializable asset of an asset graph (`defs.resolve_asset_graph()`, or a run's or
    a sensor's `repository_def.asset_graph`), in dependency order, with its freshness policy."""
    return {key: asset_graph.get(key).freshness_policy for key in asset_graph.toposorted_asset_keys
            if asset_graph.get(key).is_materializable}
