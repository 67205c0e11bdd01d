"""Every synced asset of the code location, one module per provider."""

from sync_assets import employes, ghl, halo, xero

assets = [*ghl.assets, *halo.assets, *employes.assets, *xero.assets]
asset_checks = [*ghl.asset_checks, *halo.asset_checks, *xero.asset_checks]
