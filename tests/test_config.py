"""Configuration: the production check, secrets kept out of every output, and the documented
settings matching the code."""

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from helpers import warehouse_contacts

from emulator import halo as halo_emulator
from emulator.ghl import LOCATION_ID
from resources.settings import PROJECT_ROOT, SETTINGS, ConfigError, check_settings, env_example
from resources.warehouse import engine_for

DAGSTER = str(Path(sys.executable).parent / "dagster")
SECRET_TOKEN = "pit-7c1f9e-DISTINCTIVE-ghl-token"
SECRET_PASSWORD = "Pw-DISTINCTIVE-0b5d"
SECRET_HALO = "halo-secret-DISTINCTIVE-5e1a"


def production_env(**values) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    return {**env, "SYNC_ENV": "production", **values}


def load_definitions(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from definitions import defs; defs()"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_production_with_missing_variables_fails_naming_each_of_them():
    result = load_definitions(production_env(GHL_TOKEN=SECRET_TOKEN, GHL_LOCATION_ID=LOCATION_ID))

    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    required = [s.name for s in SETTINGS if s.required and s.name not in ("GHL_TOKEN", "GHL_LOCATION_ID")]
    assert "ConfigError" in message
    assert all(name in message for name in required), message
    assert "GHL_TOKEN" not in message
    assert SECRET_TOKEN not in result.stderr + result.stdout


def test_the_production_code_location_never_imports_the_emulator():
    env = production_env(**{**{s.name: f"{s.name.lower()}-value" for s in SETTINGS if s.required},
                            "WAREHOUSE_URL": "sqlite:///:memory:", "HALO_BASE_URL": "https://halo.example.com"})
    result = subprocess.run([sys.executable, "-c", "import sys; from definitions import defs; defs(); "
                             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'emulator'))"],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_dagster_refuses_to_load_production_without_its_variables():
    result = subprocess.run([DAGSTER, "definitions", "validate"], cwd=PROJECT_ROOT,
                            env=production_env(), capture_output=True, text=True, timeout=600)

    assert result.returncode != 0
    assert "XERO_TENANT_ID" in result.stdout + result.stderr


def test_local_definitions_validate():
    env = {k: v for k, v in os.environ.items() if k != "SYNC_ENV"}
    result = subprocess.run([DAGSTER, "definitions", "validate"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_code_location_reads_no_setting_and_loads_no_sync():
    # An unusable SYNC_ENV would fail any read of the settings: the import alone must not read them.
    probe = "import sys, definitions; print(sorted(m for m in sys.modules if m.split('.')[0] in ('sync_assets', 'sensors', 'schedules')))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, env={**os.environ, "SYNC_ENV": "staging"},
                            capture_output=True, text=True, timeout=600)

    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


# Settings that shape the definitions (partitions, crons, time zones, a sensor's interval), each malformed.
MALFORMED_SHAPES = {"SYNC_TIMEZONE": "Nowhere/Atlantis", "XERO_FIRST_DAY": "notadate", "XERO_APPROVAL_POLL_SECONDS": "x",
                    "GHL_RECONCILE_CRON": "bad"}


def product_modules() -> list[str]:
    """The registry and its providers, the code location, and every module of the product's folders."""
    modules = [folder if path.stem == "__init__" else f"{folder}.{path.stem}"
               for folder in ("providers", "resources", "sync_assets", "schedules", "sensors")
               for path in sorted((PROJECT_ROOT / folder).glob("*.py"))]
    return ["definitions", *modules]


def test_importing_any_module_reads_no_setting_and_building_the_code_location_names_the_bad_ones():
    probe = ("import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\nprint('imported', flush=True)\n"
             "import definitions\ndefinitions.defs()")
    result = subprocess.run([sys.executable, "-c", probe, *product_modules()], cwd=PROJECT_ROOT, env={**os.environ, **MALFORMED_SHAPES},
                            capture_output=True, text=True, timeout=600)

    assert result.stdout.splitlines() == ["imported"], result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert message.startswith("resources.settings.ConfigError: "), result.stderr[-3000:]
    assert all(f"{name} must be" in message for name in MALFORMED_SHAPES), message


def test_unknown_sync_env_is_a_clear_error():
    result = load_definitions({**os.environ, "SYNC_ENV": "staging"})

    assert result.returncode != 0
    assert "SYNC_ENV must be 'local' or 'production', not 'staging'" in result.stderr


def test_no_secret_appears_in_logs_metadata_errors_or_the_warehouse(emulator, postgres_warehouse_url, monkeypatch, capfd, frozen_clock):
    emulator.ghl.token = SECRET_TOKEN
    emulator.halo.client_secret = SECRET_HALO
    warehouse_url = sa.make_url(postgres_warehouse_url).set(password=SECRET_PASSWORD).render_as_string(hide_password=False)
    required = {s.name: f"{s.name.lower()}-DISTINCTIVE" for s in SETTINGS if s.required}
    for name, value in {**required, "GHL_BASE_URL": emulator.url, "GHL_TOKEN": SECRET_TOKEN,
                        "GHL_LOCATION_ID": LOCATION_ID, "WAREHOUSE_URL": warehouse_url, "HALO_BASE_URL": emulator.url,
                        "HALO_CLIENT_ID": halo_emulator.CLIENT_ID, "HALO_CLIENT_SECRET": SECRET_HALO}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SYNC_ENV", "production")
    import definitions

    job = definitions.defs().resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        runs = [
            job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("ghl_contacts_reconciliation")]),
            job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("ghl_contacts")],
                                   partition_key="2026-11-20-13:00"),
            job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("halo_agents")]),
        ]
        # The credentials are now refused by the providers: the error paths.
        emulator.ghl.token = "rotated-in-the-provider-ui"
        emulator.halo.client_secret = "rotated-in-halo"
        for asset in ("ghl_contacts_reconciliation", "halo_agents"):
            runs.append(job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(asset)], raise_on_error=False))
        assert [r.success for r in runs] == [True, True, True, False, False]
        events = "\n".join(str(entry) for run in runs for entry in instance.all_logs(run.run_id))
    captured = capfd.readouterr()
    stored = str(warehouse_contacts(warehouse_url, live_only=False))
    with engine_for(warehouse_url).connect() as conn:
        stored += str(conn.execute(sa.text("SELECT * FROM sync_rejects")).all())

    assert "HTTP 401" in events
    assert "HALO_CLIENT_SECRET" in events
    secrets = [SECRET_TOKEN, SECRET_PASSWORD, SECRET_HALO, *[v for k, v in required.items() if k.endswith(("SECRET", "TOKEN"))]]
    for output in (events, captured.out, captured.err, stored):
        assert not [s for s in secrets if s in output]


def test_env_example_lists_every_setting_with_its_default():
    text = (PROJECT_ROOT / ".env.example").read_text()
    listed = dict(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", text, re.MULTILINE))

    assert list(listed) == [s.name for s in SETTINGS], "run: python -m resources.settings"
    assert all(listed[s.name] == (s.default or "") for s in SETTINGS)
    assert text == env_example()


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_readme_documents_every_setting(setting):
    assert f"`{setting.name}`" in (PROJECT_ROOT / "README.md").read_text()


BAD_VALUES = {
    "SYNC_TIMEZONE": "Mars/Base", "WAREHOUSE_URL": "not a url", "WAREHOUSE_SCHEMA": "Bad-Name", "EMULATOR_URL": "localhost:8700",
    "ALERT_WEBHOOK_URL": "hooks.example/DISTINCTIVE-path", "GHL_RECONCILE_CRON": "every night", "FISCAL_YEAR_START": "02-29",
    "FISCAL_YEAR_FIRST": "FY27", "XERO_FIRST_DAY": "yesterday", "XERO_PUSH_ENABLED": "yes", "XERO_OPEN_PERIOD_DAYS": "-3",
    "XERO_APPROVAL_POLL_SECONDS": "0", "XERO_API_URL": "ftp://api.xero.com",
    "GHL_WEBHOOK_PUBLIC_KEY": "BEGIN PUBLIC KEY not-a-key",
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_a_malformed_setting_is_refused_with_its_name(name):
    # In-process: check_settings is what loading the code location runs first (definitions.defs);
    # the test below loads it for real.
    with pytest.raises(ConfigError) as refused:
        check_settings({**os.environ, name: BAD_VALUES[name]})

    message = str(refused.value)
    assert f"{name} must be" in message
    secret = next(s for s in SETTINGS if s.name == name).secret
    assert (BAD_VALUES[name] in message) is not secret


def test_loading_the_code_location_with_malformed_settings_stops_naming_each_of_them():
    result = load_definitions({**os.environ, "SYNC_TIMEZONE": "Mars/Base", "XERO_PUSH_ENABLED": "yes",
                               "ALERT_WEBHOOK_URL": BAD_VALUES["ALERT_WEBHOOK_URL"]})

    message = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert message.startswith("resources.settings.ConfigError: ")
    assert all(f"{name} must be" in message for name in ("SYNC_TIMEZONE", "XERO_PUSH_ENABLED", "ALERT_WEBHOOK_URL"))
    assert "Mars/Base" in message and BAD_VALUES["ALERT_WEBHOOK_URL"] not in result.stderr  # a secret is named, not shown


def test_the_history_starts_at_the_installation_and_stays_there(tmp_path, monkeypatch):
    """A new installation's partitions start the hour before its first start (recorded once in
    DAGSTER_HOME), not on a fixed date months back; the record never moves; SYNC_HISTORY_START wins."""
    from datetime import UTC, datetime

    from dagster._core.test_utils import freeze_time

    from resources.settings import ensure_dagster_home, history_start, installed_at
    from sync_assets.ghl import hourly

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("SYNC_HISTORY_START")
    with freeze_time(datetime(2026, 12, 2, 14, 37, tzinfo=UTC)):
        ensure_dagster_home()
        assert installed_at() == datetime(2026, 12, 2, 14, tzinfo=UTC)
        keys = hourly().get_partition_keys()
        assert keys == ["2026-12-02-13:00"]  # the hour a first sync takes, and no empty history
    with freeze_time(datetime(2027, 3, 1, 9, 5, tzinfo=UTC)):
        assert history_start() == datetime(2026, 12, 2, 13, tzinfo=UTC)  # a restart months later: the same start
    monkeypatch.setenv("SYNC_HISTORY_START", "2026-06-01")
    assert hourly().get_first_partition_key() == "2026-06-01-00:00"


def test_an_instance_with_runs_keeps_the_old_start(tmp_path, monkeypatch):
    import dagster as dg

    from resources.settings import LEGACY_HISTORY_START, installed_at

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    @dg.asset
    def one():
        return 1

    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([one], instance=instance).success
    assert installed_at() == LEGACY_HISTORY_START
