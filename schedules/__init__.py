"""Every schedule of the code location, one module per provider, and the morning report."""
