"""What a provider declares, once (`providers/<module>.py`), and the checks that refuse a provider
left half registered.

The registry (`providers/__init__.py` `PROVIDERS`) is the one list of providers: the code
location, its resources in each environment, the warehouse's tables, the doctor, the CLI's
choices, the settings table and the emulator all derive from it. A provider is known by one
name everywhere: its asset group, its resource key, its pool (`<organisation>_<name>` with several organisations), the settings table's provider
column, the doctor's `--provider` choice and the emulator's request log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa

from resources.settings import PROJECT_ROOT, SETTINGS
from resources.tables import TABLES

if TYPE_CHECKING:
    from resources.doctor import Finding

ENVIRONMENTS = ("local", "production")  # SYNC_ENV's values: a provider has a resource for each
SHARED_SETTINGS = ("general", "access", "executor")  # the settings table's rows no provider owns
# Where a provider's modules live, by their short name `m`: `<folder>/<m>.py` or `<folder>/<m>_*.py`.
MODULE_FOLDERS = ("providers", "resources", "sync_assets", "schedules", "sensors", "emulator")


class RegistryError(Exception):
    """A provider is declared or registered only in part; the message names what is missing."""


@dataclass(frozen=True)
class Provider:
    name: str
    title: str
    module: str  # the short name of its modules (`halo`: resources/halo.py, sync_assets/halo.py, ...)
    definitions: Callable[[], dg.Definitions]  # its assets, checks, jobs, schedules, sensors; built at load
    resource_defs: Mapping[str, Callable[[], dg.ConfigurableResource]]  # per SYNC_ENV, as hooli's resource_defs[env]
    tables: Sequence[sa.Table]
    doctor: Callable[[dict, bool, datetime], list[Finding]]
    emulator: str  # its emulator module (`serve(emulator, options)`), imported only by the emulator
    reads: tuple[str, ...] = ()  # providers whose modules this one's may import (the Xero push reads Halo)

    def resource(self, env: str) -> dg.ConfigurableResource:
        return self.resource_defs[env]()

    def module_files(self, root: Path = PROJECT_ROOT) -> list[Path]:
        """Its modules in the product folders, by the naming rule above."""
        return sorted(p for folder in MODULE_FOLDERS for p in (root / folder).glob("*.py")
                      if p.stem == self.module or p.stem.startswith(f"{self.module}_"))


def check_registry(providers: Sequence[Provider], declared: Sequence[str]) -> None:
    """Refuse, naming every gap, a registry where a provider is missing a part: a declaration in
    `providers/` not in the list, a resource for an environment, tables, settings rows, an
    emulator module, or a provider it reads that is not registered."""
    names = [p.name for p in providers]
    problems = [f"provider {n!r} is registered twice" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [f"providers/{m}.py declares a provider that PROVIDERS (providers/__init__.py) does not list"
                 for m in declared if m not in {p.module for p in providers}]
    owners = {s.provider for s in SETTINGS}
    problems += [f"resources/settings.py: setting {s.name} belongs to provider {s.provider!r}, which is not registered"
                 for s in SETTINGS if s.provider not in (*names, *SHARED_SETTINGS)]
    for provider in providers:
        problems += list(_gaps(provider, names, owners))
    if problems:
        raise RegistryError("the provider registry is incomplete:\n  " + "\n  ".join(problems))


def _gaps(p: Provider, names: Sequence[str], owners: set[str]) -> Iterator[str]:
    yield from (f"{p.name}: no resource for SYNC_ENV={env}" for env in ENVIRONMENTS if env not in p.resource_defs)
    if not p.tables:
        yield f"{p.name}: no tables"
    yield from (f"{p.name}: table {t.name} is not in the warehouse's TABLES" for t in p.tables if TABLES.tables.get(t.name) is not t)
    if p.name not in owners:
        yield f"{p.name}: no rows in the settings table (resources/settings.py)"
    if not (PROJECT_ROOT / f"{p.emulator.replace('.', '/')}.py").exists():  # not imported: production never imports it
        yield f"{p.name}: its emulator module {p.emulator} does not exist"
    yield from (f"{p.name}: reads {r!r}, which is not registered" for r in p.reads if r not in names)


def check_definitions(provider: Provider, defs: dg.Definitions) -> dg.Definitions:
    """A provider's definitions hold assets, all in its group: a misspelt or missing export is an
    error at load, never a provider silently dropped."""
    specs = [spec for assets_def in defs.assets or () for spec in assets_def.specs]
    if not specs:
        raise RegistryError(f"{provider.name}: its definitions hold no asset")
    strays = sorted(s.key.to_user_string() for s in specs if s.group_name != provider.name)
    if strays:
        raise RegistryError(f"{provider.name}: assets outside its group {provider.name!r}: {', '.join(strays)}")
    return defs
