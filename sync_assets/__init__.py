"""The synced assets, one module per provider (GoHighLevel, HaloPSA, Employes, Xero), and the
operations around them (the doctor, the daily report). `definitions.py` merges them."""
