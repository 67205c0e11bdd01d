"""docs/adding-a-provider.md, followed: a copy of the project gets a fifth provider (Pipedrive,
tests/fifth_provider/) as new modules plus its registration and its settings' rows, and the code
location, the CLI, the doctor, the warehouse and the emulator take it up with nothing else
changed; left out of the registry, it stops the load naming it; the tests hold it to the
conventions."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resources.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

FIFTH = PROJECT_ROOT / "tests" / "fifth_provider"
COPIED = ("providers", "resources", "sync_assets", "schedules", "sensors", "emulator", "config", "tests")
REGISTRY_IMPORT = "from providers import employes, ghl, halo, xero\n"
REGISTRY_LIST = "(ghl.PROVIDER, halo.PROVIDER, employes.PROVIDER, xero.PROVIDER)"
SETTINGS_ROWS = '''    Setting("PIPEDRIVE_BASE_URL", "pipedrive", "https://api.pipedrive.com", doc="Pipedrive API base URL", kind="url"),
    Setting("PIPEDRIVE_TOKEN", "pipedrive", required=True, secret=True, doc="API token"),
    Setting("PIPEDRIVE_SYNC_CRON", "pipedrive", "0 3 * * *", doc="cron of the nightly sync", kind="cron"),
'''
SETTINGS_END = "    # Read by deploy/start and deploy/proxy"

# In the copy: the emulator, the code location, one sync of the new asset, its doctor, the CLI.
EXERCISE = """
import json, os
import dagster as dg
from emulator import Emulator
emulator = Emulator(seed=7)
emulator.start()
os.environ["EMULATOR_URL"] = emulator.url
from cli import argument_parser
from definitions import defs
from providers import NAMES, doctor_checks
from resources.doctor import run_doctor
defs = defs()
result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
    asset_selection=[dg.AssetKey("pipedrive_persons")], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
resources = {name: defs.resources[name].process_config_and_initialize() for name in ("pipedrive", "warehouse")}
findings = run_doctor(doctor_checks(("pipedrive",)), resources, production=False)
with resources["warehouse"].engine.connect() as conn:
    stored = conn.exec_driver_sql("SELECT count(*) FROM pipedrive_persons").scalar()
doctor = next(a for a in argument_parser()._subparsers._group_actions[0].choices["doctor"]._actions if a.dest == "provider")
print(json.dumps({
    "providers": list(NAMES), "groups": sorted({s.group_name for s in defs.resolve_all_asset_specs()}),
    "schedules": sorted(s.name for s in defs.schedules), "synced": result.success, "stored": stored,
    "requests": len(emulator.requests("pipedrive")), "doctor": [(f.check, f.severity) for f in findings],
    "doctor_choices": list(doctor.choices),
}))
emulator.stop()
"""


def project_with_fifth_provider(root: Path, *, registered: bool = True) -> Path:
    """A copy of the project with Pipedrive's new modules, its settings' rows and (unless not
    `registered`) its entry in the registry: the guide's steps, nothing else."""
    for name in COPIED:
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "fifth_provider"))
    for path in PROJECT_ROOT.glob("*.py"):
        shutil.copy(path, root / path.name)
    for path in FIFTH.rglob("*.py"):
        shutil.copy(path, root / path.relative_to(FIFTH))
    settings = root / "resources" / "settings.py"
    settings.write_text(settings.read_text().replace(SETTINGS_END, SETTINGS_ROWS + SETTINGS_END, 1))
    if registered:
        registry = root / "providers" / "__init__.py"
        text = registry.read_text()
        assert REGISTRY_IMPORT in text and REGISTRY_LIST in text, "the registry's lines changed: update this test and the guide"
        registry.write_text(text.replace(REGISTRY_IMPORT, "from providers import employes, ghl, halo, pipedrive, xero\n")
                            .replace(REGISTRY_LIST, REGISTRY_LIST[:-1] + ", pipedrive.PROVIDER)"))
    return root


def run_in(root: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "DAGSTER_HOME": str(tmp_path / "home"),
           "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}", "XERO_TOKEN_KEY": "x" * 43 + "="}
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)


def test_a_fifth_provider_is_taken_up_by_the_code_location_cli_doctor_warehouse_and_emulator(tmp_path):
    root = project_with_fifth_provider(tmp_path / "project")
    ran = run_in(root, "-c", EXERCISE, tmp_path=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["providers"][-1] == "pipedrive" and seen["doctor_choices"] == seen["providers"]
    assert "pipedrive" in seen["groups"] and "pipedrive_nightly" in seen["schedules"]
    assert seen["synced"] and seen["stored"] == 5 and seen["requests"] >= 2  # the sync's and the doctor's
    assert ("credentials", "PASS") in [tuple(f) for f in seen["doctor"]]


def test_a_fifth_provider_left_out_of_the_registry_stops_the_load_naming_it(tmp_path):
    root = project_with_fifth_provider(tmp_path / "project", registered=False)
    ran = run_in(root, "-c", "from definitions import defs; defs()", tmp_path=tmp_path)
    assert ran.returncode != 0
    assert "providers/pipedrive.py declares a provider that PROVIDERS (providers/__init__.py) does not list" in ran.stderr
    assert "setting PIPEDRIVE_TOKEN belongs to provider 'pipedrive', which is not registered" in ran.stderr


def test_the_conventions_hold_the_fifth_provider_and_ask_for_its_test_adapter(tmp_path):
    root = project_with_fifth_provider(tmp_path / "project")
    ran = run_in(root, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_defs.py", "tests/test_registry.py", tmp_path=tmp_path)
    assert "test_group_is_the_provider[pipedrive_persons] PASSED" in ran.stdout  # the conventions ran over its asset ...
    failed = [line for line in ran.stdout.splitlines() if line.startswith("FAILED")]
    # ... and passed but for the one step the guide lists for the tests: its sync adapter in tests/syncs.py.
    assert [line.split(" ")[1] for line in failed] == ["tests/test_registry.py::test_every_registered_provider_has_a_test_adapter"], ran.stdout[-3000:]
