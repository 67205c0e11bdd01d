"""The workforce-sync code location: one `dg.Definitions` for the UI, the daemon and the CLI,
merged from one `dg.Definitions` per provider (its assets, checks, jobs, schedules and sensors)
and one for the operations around them (the doctor, the daily report, the alerts, the first sync).

Built lazily (`@dg.definitions`): importing this module reads no setting and writes nothing;
Dagster calls `defs()` when it loads the code location, and only then are the settings checked,
the provider modules imported (their partitions and crons come from settings) and, locally, the
Xero token key made.

`SYNC_ENV` picks the resources: `local` (default) talks to the provider emulator and an SQLite
warehouse with no credentials; `production` talks to the real providers with secrets read
through `dg.EnvVar`, and refuses to load while a required variable is missing.
"""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg

from resources.employes import EmployesResource
from resources.ghl import GoHighLevelResource
from resources.halo import HaloPSAResource
from resources.mappings import MappingFilesResource
from resources.settings import check_production, check_settings, local_warehouse_url, setting, sync_env
from resources.warehouse import WarehouseResource
from resources.xero import XeroResource, local_token_key

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


def local_resources() -> dict:
    """The embedded default: the emulator's providers and their well-known local credentials.
    (The emulator is imported here, so the production code location never imports it.)"""
    from emulator import employes as employes_emulator, ghl as ghl_emulator, halo as halo_emulator, xero as xero_emulator

    emulator_url = setting("EMULATOR_URL")
    return {
        "gohighlevel": GoHighLevelResource(
            base_url=emulator_url, token=ghl_emulator.TOKEN, location_id=ghl_emulator.LOCATION_ID
        ),
        "halopsa": HaloPSAResource(
            base_url=emulator_url,
            auth_url=f"{emulator_url}/auth",
            client_id=halo_emulator.CLIENT_ID,
            client_secret=halo_emulator.CLIENT_SECRET,
        ),
        "employes": EmployesResource(
            base_url=emulator_url, token=employes_emulator.TOKEN, company_id=employes_emulator.COMPANY_ID
        ),
        "xero": XeroResource(
            api_url=emulator_url,
            identity_url=emulator_url,
            client_id=xero_emulator.CLIENT_ID,
            client_secret=xero_emulator.CLIENT_SECRET,
            tenant_id=xero_emulator.TENANT_ID,
            # XERO_TOKEN_KEY when set (the tests set it), else the installation's own key file.
            token_key=dg.EnvVar("XERO_TOKEN_KEY") if os.environ.get("XERO_TOKEN_KEY") else local_token_key(),
            initial_refresh_token=xero_emulator.INITIAL_REFRESH_TOKEN,
        ),
        "mapping_files": mapping_files(),
        "warehouse": WarehouseResource(
            url=dg.EnvVar("WAREHOUSE_URL") if os.environ.get("WAREHOUSE_URL") else local_warehouse_url(),
            db_schema=setting("WAREHOUSE_SCHEMA"),
        ),
    }


def production_resources() -> dict:
    """The real providers. Fails at load time, naming every missing variable."""
    check_production()
    return {
        "gohighlevel": GoHighLevelResource(
            base_url=setting("GHL_BASE_URL"), token=dg.EnvVar("GHL_TOKEN"), location_id=dg.EnvVar("GHL_LOCATION_ID")
        ),
        "halopsa": HaloPSAResource(
            base_url=setting("HALO_BASE_URL"),
            auth_url=setting("HALO_AUTH_URL"),
            client_id=dg.EnvVar("HALO_CLIENT_ID"),
            client_secret=dg.EnvVar("HALO_CLIENT_SECRET"),
            tenant=setting("HALO_TENANT"),
        ),
        "employes": EmployesResource(
            base_url=setting("EMPLOYES_BASE_URL"), token=dg.EnvVar("EMPLOYES_TOKEN"), company_id=dg.EnvVar("EMPLOYES_COMPANY_ID")
        ),
        "xero": XeroResource(
            api_url=setting("XERO_API_URL"),
            identity_url=setting("XERO_IDENTITY_URL"),
            client_id=dg.EnvVar("XERO_CLIENT_ID"),
            client_secret=dg.EnvVar("XERO_CLIENT_SECRET"),
            tenant_id=dg.EnvVar("XERO_TENANT_ID"),
            token_key=dg.EnvVar("XERO_TOKEN_KEY"),
            initial_refresh_token=dg.EnvVar("XERO_REFRESH_TOKEN") if os.environ.get("XERO_REFRESH_TOKEN") else None,
        ),
        "mapping_files": mapping_files(),
        "warehouse": WarehouseResource(url=dg.EnvVar("WAREHOUSE_URL"), db_schema=setting("WAREHOUSE_SCHEMA")),
    }


RESOURCES = {"local": local_resources, "production": production_resources}


def area(assets_module, schedules_module=None, sensors_module=None) -> dg.Definitions:
    """One area's definitions: what its asset module defines (assets, checks, the jobs that
    materialize them), with its schedules and sensors."""
    return dg.Definitions(
        assets=getattr(assets_module, "assets", []),
        asset_checks=getattr(assets_module, "asset_checks", []),
        jobs=getattr(assets_module, "jobs", []),
        schedules=getattr(schedules_module, "schedules", []),
        sensors=getattr(sensors_module, "sensors", []),
    )


@dg.definitions
def defs() -> dg.Definitions:
    # Checked before any module reads a setting, so a bad configuration is one message naming
    # every bad setting.
    check_settings()
    import schedules.employes, schedules.ghl, schedules.halo, schedules.report, schedules.xero  # noqa: E401
    import sensors.alerts, sensors.first_sync, sensors.halo, sensors.xero  # noqa: E401
    import sync_assets.doctor, sync_assets.employes, sync_assets.ghl, sync_assets.halo, sync_assets.report, sync_assets.xero  # noqa: E401

    merged = dg.Definitions.merge(
        area(sync_assets.ghl, schedules.ghl),
        area(sync_assets.halo, schedules.halo, sensors.halo),
        area(sync_assets.employes, schedules.employes),
        area(sync_assets.xero, schedules.xero, sensors.xero),
        area(sync_assets.report, schedules.report),
        area(sync_assets.doctor),
        dg.Definitions(sensors=[*sensors.alerts.sensors, *sensors.first_sync.sensors]),
        dg.Definitions(resources=RESOURCES[sync_env()]()),
    )
    return merged.permissive_map_resolved_asset_specs(func=with_health, selection=dg.AssetSelection.tag(CADENCE_TAG, "hourly") | dg.AssetSelection.tag(CADENCE_TAG, "daily"))
