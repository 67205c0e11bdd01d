"""The registry: the one list of providers. Everything that lists providers derives from it: the
code location (definitions.py), each environment's resources, the warehouse's tables and
upgrades, the doctor and the CLI's `--provider` choices, the emulator, and the tests' checks.

A provider declares itself once, in `providers/<module>.py` (`PROVIDER`, resources/provider.py
`Provider`); adding one is its new modules and one line below (docs/adding-a-provider.md). A
provider left half registered stops the registry from loading, naming what is missing.
"""

import pkgutil

from providers import employes, ghl, halo, xero
from resources.organisations import enabled_providers
from resources.provider import Provider, check_registry
from resources.tables import LOADED_PROVIDERS

# In the order the syncs run (and the doctor reports): Halo before Xero, whose push reads it.
PROVIDERS: tuple[Provider, ...] = (ghl.PROVIDER, halo.PROVIDER, employes.PROVIDER, xero.PROVIDER)

check_registry(PROVIDERS, declared=[m.name for m in pkgutil.iter_modules(__path__)])
LOADED_PROVIDERS[:] = [p.name for p in PROVIDERS]
BY_NAME = {p.name: p for p in PROVIDERS}
NAMES = tuple(BY_NAME)
READS = {p.name: p.reads for p in PROVIDERS}  # what an organisation's provider list must hold together


def enabled() -> tuple[Provider, ...]:
    """The providers this code location builds: all, or those its organisation has (an
    organisation's code server is told by ORGANISATION_PROVIDERS, resources/organisations.py)."""
    names = enabled_providers()
    return tuple(p for p in PROVIDERS if names is None or p.name in names)


def doctor_checks(names: tuple[str, ...] | None = None) -> dict:
    """The doctor's checks of each enabled provider (or of those named), in the registry's order."""
    return {p.name: p.doctor for p in enabled() if names is None or p.name in names}
