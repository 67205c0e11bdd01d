"""HaloPSA, declared once: agents and their mappings, timesheets by fiscal year."""

import dagster as dg

from resources import halo_tables
from resources.halo import HaloPSAResource
from resources.halo_doctor import check_halopsa
from resources.provider import Provider
from resources.settings import setting


def definitions() -> dg.Definitions:
    # Imported and built when the code location loads, not with the registry: what settings shape
    # (partitions, crons, time zones) is read by the factories called here.
    import schedules.halo, sensors.halo, sync_assets.halo  # noqa: E401

    return dg.Definitions(assets=sync_assets.halo.assets, asset_checks=sync_assets.halo.asset_checks, jobs=sync_assets.halo.jobs,
                          schedules=schedules.halo.schedules(), sensors=sensors.halo.sensors)


# The embedded default's credentials: the emulator (emulator/halo.py) accepts these.
LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET = "local-halo-client", "local-halo-secret"


def local() -> HaloPSAResource:
    url = setting("EMULATOR_URL")
    return HaloPSAResource(base_url=url, auth_url=f"{url}/auth", client_id=LOCAL_CLIENT_ID, client_secret=LOCAL_CLIENT_SECRET)


def production() -> HaloPSAResource:
    return HaloPSAResource(base_url=setting("HALO_BASE_URL"), auth_url=setting("HALO_AUTH_URL"), client_id=dg.EnvVar("HALO_CLIENT_ID"),
                           client_secret=dg.EnvVar("HALO_CLIENT_SECRET"), tenant=setting("HALO_TENANT"))


PROVIDER = Provider(
    name="halopsa", title="HaloPSA", module="halo", definitions=definitions,
    resource_defs={"local": local, "production": production}, tables=halo_tables.tables, doctor=check_halopsa,
    emulator="emulator.halo",
)
