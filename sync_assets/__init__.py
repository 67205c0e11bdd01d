"""Every synced asset of the code location, one module per provider."""

from sync_assets import ghl

assets = [*ghl.assets]
asset_checks = [*ghl.asset_checks]
