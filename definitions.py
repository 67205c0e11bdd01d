"""The workforce-sync code location: one `dg.Definitions` for the UI, the daemon and the CLI,
merged (`dg.Definitions.merge`) from one `dg.Definitions` per registered provider (providers/:
its assets, checks, jobs, schedules and sensors) and one for the operations around them (the
doctor, the daily report, the alerts, the first sync).

Built lazily (`@dg.definitions`): importing this module reads no setting and writes nothing;
Dagster calls `defs()` when it loads the code location, and only then are the settings checked,
the provider modules imported, their assets, schedules and sensors built (their partitions, crons
and intervals come from settings, read by the factories that build them) and, locally, the Xero
token key made.

`SYNC_ENV` picks the resources: `local` (default) talks to the provider emulator and an SQLite
warehouse with no credentials; `production` talks to the real providers with secrets read
through `dg.EnvVar`, and refuses to load while a required variable is missing.
"""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg

from providers import enabled
from resources.executor import on_executor
from resources.mappings import MappingFilesResource
from resources.organisations import check_served
from resources.provider import check_definitions
from resources.settings import check_production, check_settings, local_warehouse_url, setting, sync_env
from resources.warehouse import WarehouseResource

# The health light, in one place for every synced asset: green while the last successful
# sync is under 2 h old, yellow from 2 h, red from 6 h. A nightly asset would be red most of
# the day under that window, so daily syncs get the same light scaled to their cadence:
# yellow when a night was missed by 2 h, red when it was missed by 6 h.
HEALTH = {
    "hourly": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=6), warn_window=timedelta(hours=2)),
    "daily": dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)),
}
CADENCE_TAG = "sync/cadence"


def with_health(spec: dg.AssetSpec) -> dg.AssetSpec:
    return dg.apply_freshness_policy(spec, HEALTH[spec.tags[CADENCE_TAG]])


def mapping_files() -> MappingFilesResource:
    return MappingFilesResource(
        agent_mappings_file=setting("AGENT_MAPPINGS_FILE"), project_mappings_file=setting("XERO_PROJECT_MAPPINGS_FILE")
    )


def warehouse(env: str) -> WarehouseResource:
    local = env == "local" and not os.environ.get("WAREHOUSE_URL")
    return WarehouseResource(url=local_warehouse_url() if local else dg.EnvVar("WAREHOUSE_URL"), db_schema=setting("WAREHOUSE_SCHEMA"))


def resources(env: str) -> dict:
    """Every provider's resource for `env` (`local`: the emulator and its well-known credentials;
    `production`: the real providers, which fails at load naming every missing variable), and the
    shared ones."""
    if env == "production":
        check_production()
    return {**{p.name: p.resource(env) for p in enabled()}, "mapping_files": mapping_files(), "warehouse": warehouse(env)}


def operations() -> dg.Definitions:
    """What runs around the syncs: the doctor, the daily report, the alerts, the first sync, the
    health checks' sensor."""
    import schedules.report, sensors.alerts, sensors.first_sync, sensors.health, sync_assets.doctor, sync_assets.report  # noqa: E401

    return dg.Definitions(assets=sync_assets.report.assets(), jobs=[*sync_assets.report.jobs, *sync_assets.doctor.jobs],
                          schedules=schedules.report.schedules, sensors=[*sensors.alerts.sensors, *sensors.first_sync.sensors, *sensors.health.sensors])


@dg.definitions
def defs() -> dg.Definitions:
    # Checked before any definition is built from the settings, so a bad configuration is one
    # message naming every bad setting.
    check_settings()
    check_served()
    merged = dg.Definitions.merge(
        *(check_definitions(p, p.definitions()) for p in enabled()),
        operations(),
        dg.Definitions(resources=resources(sync_env())),
    )
    healthy = merged.permissive_map_resolved_asset_specs(func=with_health, selection=dg.AssetSelection.tag(CADENCE_TAG, "hourly") | dg.AssetSelection.tag(CADENCE_TAG, "daily"))
    # SYNC_EXECUTOR: every job's steps on this machine (unchanged) or on Celery workers.
    return on_executor(dg.Definitions.merge(healthy, dg.Definitions(asset_checks=[health_checks(healthy)])))


def health_checks(healthy: dg.Definitions) -> dg.AssetChecksDefinition:
    """The light as a check the UI shows: a `health` check on every asset the policy went to
    (sensors/health.py; its sensor evaluates them without runs). Asset specs carry no check
    specs, so the checks are one definition over the assets `with_health` gave a policy."""
    from sensors.health import health_checks_def

    return health_checks_def({spec.key: spec.freshness_policy for spec in healthy.resolve_all_asset_specs() if spec.freshness_policy})
