"""Every sensor of the code location, one module per provider (none yet for GoHighLevel:
its syncs are time-driven)."""

sensors: list = []
