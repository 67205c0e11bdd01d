"""Every synced asset of the code location, one module per provider."""

from sync_assets import ghl, halo

assets = [*ghl.assets, *halo.assets]
asset_checks = [*ghl.asset_checks, *halo.asset_checks]
