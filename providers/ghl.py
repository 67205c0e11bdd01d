"""GoHighLevel CRM, declared once: contacts pulled hourly, reconciled nightly, and read at once
when a contact event names them."""

import dagster as dg

from resources.ghl import GoHighLevelResource
from resources.ghl_doctor import check_gohighlevel
from resources.ghl_tables import ghl_contacts
from resources.provider import Provider
from resources.settings import setting


def definitions() -> dg.Definitions:
    # Imported and built when the code location loads, not with the registry: what settings shape
    # (partitions, crons, time zones) is read by the factories called here.
    import schedules.ghl, sensors.ghl, sync_assets.ghl  # noqa: E401

    return dg.Definitions(assets=sync_assets.ghl.assets(), asset_checks=sync_assets.ghl.asset_checks, jobs=sync_assets.ghl.jobs,
                          schedules=schedules.ghl.schedules(), sensors=sensors.ghl.sensors())


# The embedded default's credentials: the emulator (emulator/ghl.py) accepts these.
LOCAL_TOKEN, LOCAL_LOCATION_ID = "local-ghl-token", "locEmulator0001"


def local() -> GoHighLevelResource:
    return GoHighLevelResource(base_url=setting("EMULATOR_URL"), token=LOCAL_TOKEN, location_id=LOCAL_LOCATION_ID)


def production() -> GoHighLevelResource:
    return GoHighLevelResource(base_url=setting("GHL_BASE_URL"), token=dg.EnvVar("GHL_TOKEN"), location_id=dg.EnvVar("GHL_LOCATION_ID"))


PROVIDER = Provider(
    name="gohighlevel", title="GoHighLevel CRM", module="ghl", definitions=definitions,
    resource_defs={"local": local, "production": production}, tables=(ghl_contacts,), doctor=check_gohighlevel,
    emulator="emulator.ghl",
)
