"""Every sensor of the code location: one module per provider (Employes' sync is time-driven and
has none; GoHighLevel's takes up contact events), and `alerts` (failed runs and red health lights to
ALERT_WEBHOOK_URL), `first_sync` (every asset once on a new installation), and `health` (the health
light as the `health` asset check the UI shows)."""
