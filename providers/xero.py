"""Xero Projects, declared once: approved Halo time pushed as time entries, reconciled nightly.
The push reads Halo's approved time, so Xero's modules may import Halo's (`reads`)."""

import os
import uuid

import dagster as dg

from resources import xero_tables
from resources.provider import Provider
from resources.settings import setting
from resources.xero import XeroResource, local_token_key
from resources.xero_doctor import check_xero


def definitions() -> dg.Definitions:
    # Imported and built when the code location loads, not with the registry: what settings shape
    # (partitions, crons, time zones, the approval sensor's interval) is read by the factories called here.
    import schedules.xero, sensors.xero, sync_assets.xero  # noqa: E401

    return dg.Definitions(assets=sync_assets.xero.assets(), asset_checks=sync_assets.xero.asset_checks, jobs=sync_assets.xero.jobs,
                          schedules=schedules.xero.schedules(), sensors=sensors.xero.sensors())


# The embedded default's credentials: the emulator (emulator/xero.py) accepts these.
LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET = "local-xero-client", "local-xero-secret"
LOCAL_TENANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "xero-tenant-local"))
LOCAL_REFRESH_TOKEN = "local-xero-refresh-initial"


def local() -> XeroResource:
    url = setting("EMULATOR_URL")
    return XeroResource(
        api_url=url, identity_url=url, client_id=LOCAL_CLIENT_ID, client_secret=LOCAL_CLIENT_SECRET, tenant_id=LOCAL_TENANT_ID,
        # XERO_TOKEN_KEY when set (the tests set it), else the installation's own key file.
        token_key=dg.EnvVar("XERO_TOKEN_KEY") if os.environ.get("XERO_TOKEN_KEY") else local_token_key(),
        initial_refresh_token=LOCAL_REFRESH_TOKEN,
    )


def production() -> XeroResource:
    return XeroResource(
        api_url=setting("XERO_API_URL"), identity_url=setting("XERO_IDENTITY_URL"), client_id=dg.EnvVar("XERO_CLIENT_ID"),
        client_secret=dg.EnvVar("XERO_CLIENT_SECRET"), tenant_id=dg.EnvVar("XERO_TENANT_ID"), token_key=dg.EnvVar("XERO_TOKEN_KEY"),
        initial_refresh_token=dg.EnvVar("XERO_REFRESH_TOKEN") if os.environ.get("XERO_REFRESH_TOKEN") else None,
    )


PROVIDER = Provider(
    name="xero", title="Xero Projects", module="xero", definitions=definitions,
    resource_defs={"local": local, "production": production}, tables=xero_tables.tables, doctor=check_xero,
    emulator="emulator.xero", reads=("halopsa",),
)
