"""Every synced asset of the code location, one module per provider."""

from sync_assets import employes, ghl, halo

assets = [*ghl.assets, *halo.assets, *employes.assets]
asset_checks = [*ghl.asset_checks, *halo.asset_checks]
