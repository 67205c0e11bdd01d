"""Every synced asset of the code location, one module per provider."""

from resources.settings import check_settings

# The asset, schedule and sensor modules read settings when imported (partition starts, crons):
# check them all first, so a bad configuration is one message naming every bad setting.
check_settings()

from sync_assets import doctor, employes, ghl, halo, report, xero  # noqa: E402

assets = [*ghl.assets, *halo.assets, *employes.assets, *xero.assets, *report.assets]
asset_checks = [*ghl.asset_checks, *halo.asset_checks, *xero.asset_checks]
jobs = [*doctor.jobs, *ghl.jobs, *xero.jobs]
