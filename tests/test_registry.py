"""The provider registry (providers/) is the one list of providers: what lists providers derives
from it, a provider left half registered is refused at load naming what is missing, and the
modules keep to their layers (no circle outside the emulator, no provider importing another's
modules unless it declares that it reads it)."""

import ast
import dataclasses
from pathlib import Path

import dagster as dg
import pytest
from syncs import SYNCS

import providers
from cli import argument_parser
from definitions import defs as load_definitions
from emulator import Emulator
from providers import BY_NAME, NAMES, PROVIDERS
from resources.provider import RegistryError, check_definitions, check_registry
from resources.settings import PROJECT_ROOT
from resources.tables import TABLES

DECLARED = [p.module for p in PROVIDERS]
PRODUCT_FOLDERS = ("providers", "resources", "sync_assets", "schedules", "sensors", "emulator")


def refusal(registry, declared=DECLARED) -> str:
    with pytest.raises(RegistryError) as raised:
        check_registry(registry, declared)
    return str(raised.value)


def test_the_code_location_the_cli_the_doctor_and_the_emulator_list_the_registered_providers():
    defs = load_definitions()
    groups = {spec.group_name for spec in defs.resolve_all_asset_specs()}
    assert groups == {*NAMES, "operations"}
    assert set(NAMES) <= set(defs.resources)
    doctor = next(a for a in argument_parser()._subparsers._group_actions[0].choices["doctor"]._actions if a.dest == "provider")
    assert tuple(doctor.choices) == NAMES
    assert set(providers.doctor_checks()) == set(NAMES)
    emulator = Emulator()
    assert {route.provider for route in emulator.routes} == {*NAMES, "webhook"}
    assert all(table.name in TABLES.tables for p in PROVIDERS for table in p.tables)


def test_every_registered_provider_has_a_test_adapter():
    # tests/syncs.py: the fault matrix and the concurrent-runs test drive each provider's sync.
    assert set(SYNCS) == set(NAMES), "a provider without a sync adapter in tests/syncs.py escapes the fault matrix"


def test_a_declaration_left_out_of_the_list_is_refused():
    message = refusal(tuple(p for p in PROVIDERS if p.name != "xero"))
    assert "providers/xero.py declares a provider that PROVIDERS (providers/__init__.py) does not list" in message
    assert "setting XERO_CLIENT_ID belongs to provider 'xero', which is not registered" in message
    assert "xero: reads" not in message


def test_a_provider_missing_a_part_is_refused_naming_each_part():
    halo = next(p for p in PROVIDERS if p.name == "halopsa")
    half = dataclasses.replace(halo, resource_defs={"local": halo.resource_defs["local"]}, tables=(), emulator="emulator.halopsa",
                               reads=("payroll",))
    message = refusal(tuple(half if p is halo else p for p in PROVIDERS))
    for gap in ("halopsa: no resource for SYNC_ENV=production", "halopsa: no tables",
                "halopsa: its emulator module emulator.halopsa does not exist", "halopsa: reads 'payroll', which is not registered"):
        assert gap in message


def test_a_provider_registered_twice_is_refused():
    assert "provider 'xero' is registered twice" in refusal((*PROVIDERS, BY_NAME["xero"]))


def test_definitions_without_assets_or_outside_the_group_are_refused():
    xero = next(p for p in PROVIDERS if p.name == "xero")
    with pytest.raises(RegistryError, match="xero: its definitions hold no asset"):
        check_definitions(xero, dg.Definitions())

    @dg.asset(group_name="gohighlevel")
    def stray():
        """An asset that names another provider's group."""

    with pytest.raises(RegistryError, match="xero: assets outside its group 'xero': stray"):
        check_definitions(xero, dg.Definitions(assets=[stray]))


# -- the import graph ---------------------------------------------------------------------------
def module_name(path: Path) -> str:
    relative = path.relative_to(PROJECT_ROOT).with_suffix("")
    return ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)


MODULES = {module_name(p): p for folder in PRODUCT_FOLDERS for p in (PROJECT_ROOT / folder).glob("*.py")}
MODULES |= {p.stem: p for p in PROJECT_ROOT.glob("*.py")}


def imported(path: Path) -> set[str]:
    """The project's modules `path` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name in MODULES}


GRAPH = {name: imported(path) - {name} for name, path in MODULES.items()}


def cycle_through(start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for dependency in GRAPH[name]:
            if dependency == start:
                return path + [start]
            if dependency not in seen:
                seen.add(dependency)
                stack.append((dependency, path + [dependency]))
    return None


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.startswith("emulator")))
def test_no_import_circle_outside_the_emulator(name):
    cycle = cycle_through(name)
    assert cycle is None or any(n.startswith("emulator") for n in cycle), f"import circle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("provider", PROVIDERS, ids=NAMES)
def test_a_providers_modules_import_only_the_providers_it_reads(provider):
    owner = {module_name(path): p for p in PROVIDERS for path in p.module_files()}
    own = [module_name(path) for path in provider.module_files()]
    assert own, f"{provider.name}: no modules named {provider.module}*.py"
    crossing = sorted(f"{name} imports {dependency}" for name in own for dependency in GRAPH[name]
                      if dependency in owner and owner[dependency] is not provider and owner[dependency].name not in provider.reads)
    assert not crossing, f"{provider.name} imports another provider's modules without declaring it reads it: {crossing}"
