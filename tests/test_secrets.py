"""Secrets stay secret (issue 7): every sync runs as production runs it, with a distinctive value
in every secret setting, succeeding and then failing on refused credentials; afterwards
the captured logs, the Dagster instance's PostgreSQL tables (runs, event logs, metadata, errors,
snapshots), the instance's files, the alerts and the warehouse are searched for each secret and
its obvious encodings. Only `xero_tokens` may hold the refresh token, and only encrypted."""

import base64
import logging
import secrets
import zlib
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, quote_plus

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import ANCHOR, POSTGRES_ADMIN_URL
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time

from emulator import employes as employes_emulator, halo as halo_emulator, xero as xero_emulator
from emulator.ghl import LOCATION_ID
from resources.warehouse import engine_for

DAY = date(2026, 11, 18)  # a weekday the emulator has not approved yet
AGENT = 3
NOW = ANCHOR + timedelta(hours=3)
SCHEMA = "warehouse"
# '/', '+' and '=' change under URL and form encoding, so the encoded forms are worth searching.
GHL_TOKEN = "pit-S3CRET-ghl/4e1b+9d"
HALO_SECRET = "halo-S3CRET-client/77ac+=x"
EMPLOYES_TOKEN = "eyJ-S3CRET-employes.2f9c/jwt"
XERO_SECRET = "xero-S3CRET-client/5b0d+=y"
# The emulator takes a refresh token with its own prefix it has not issued (as after a restart).
XERO_REFRESH = xero_emulator.REFRESH_PREFIX + "S3CRET-first-9a31"
DB_PASSWORD = "pw-S3CRET-warehouse-61f0"
WEBHOOK_TOKEN = "S3CRET-hook-T0B0-c8e2"


@pytest.fixture
def database():
    """A fresh PostgreSQL database for the Dagster instance and (schema `warehouse`) the warehouse."""
    name = f"workforce_sync_secrets_{secrets.token_hex(4)}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin.url.set(database=name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def encodings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(secret.encode()).decode()}


def readable(value) -> str:
    """A column value as text; Dagster keeps snapshots zlib-compressed."""
    if isinstance(value, memoryview | bytes):
        value = bytes(value)
        try:
            value = zlib.decompress(value)
        except zlib.error:
            pass
        return value.decode(errors="replace")
    return str(value)


def dump_database(url: sa.URL) -> dict[str, str]:
    """Every table of every schema as text, by `schema.table`."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = {}
        with engine.connect() as conn:
            for schema in inspector.get_schema_names():
                if schema in ("information_schema", "pg_catalog"):
                    continue
                for table in inspector.get_table_names(schema=schema):
                    rows = conn.execute(sa.text(f'SELECT * FROM "{schema}"."{table}"')).all()
                    tables[f"{schema}.{table}"] = "\n".join(" | ".join(readable(v) for v in row) for row in rows)
        return tables
    finally:
        engine.dispose()


def dump_files(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow  # every sync and a failure of each: close to a minute
def test_no_secret_of_any_sync_reaches_logs_runs_events_errors_alerts_or_the_warehouse(
        emulator, database, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    token_key = Fernet.generate_key().decode()
    emulator.ghl.token = GHL_TOKEN
    emulator.halo.client_secret = HALO_SECRET
    emulator.employes.token = EMPLOYES_TOKEN
    emulator.xero.client_secret = XERO_SECRET
    emulator.xero.accept_unknown_refresh_tokens = True
    warehouse_url = database.set(password=DB_PASSWORD).render_as_string(hide_password=False)
    webhook_url = f"{emulator.webhook.url}?token={WEBHOOK_TOKEN}"
    env = {
        "SYNC_ENV": "production", "WAREHOUSE_URL": warehouse_url, "WAREHOUSE_SCHEMA": SCHEMA, "ALERT_WEBHOOK_URL": webhook_url,
        "GHL_BASE_URL": emulator.url, "GHL_TOKEN": GHL_TOKEN, "GHL_LOCATION_ID": LOCATION_ID,
        "HALO_BASE_URL": emulator.url, "HALO_CLIENT_ID": halo_emulator.CLIENT_ID, "HALO_CLIENT_SECRET": HALO_SECRET,
        "EMPLOYES_BASE_URL": emulator.url, "EMPLOYES_TOKEN": EMPLOYES_TOKEN, "EMPLOYES_COMPANY_ID": employes_emulator.COMPANY_ID,
        "XERO_API_URL": emulator.url, "XERO_IDENTITY_URL": emulator.url, "XERO_CLIENT_ID": xero_emulator.CLIENT_ID,
        "XERO_CLIENT_SECRET": XERO_SECRET, "XERO_REFRESH_TOKEN": XERO_REFRESH, "XERO_TOKEN_KEY": token_key,
        "XERO_TENANT_ID": xero_emulator.TENANT_ID, "XERO_PUSH_ENABLED": "true", "XERO_OPEN_PERIOD_DAYS": "3",
        "XERO_PUSH_WITHOUT_DOCTOR": "true",  # the doctor fails here (the emulator is no production address)
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import definitions
    from sensors.alerts import health_alerts, run_failure_alerts

    defs = definitions.defs()
    job = defs.resolve_implicit_global_asset_job_def()
    emulator.halo.approve(AGENT, DAY)
    home = tmp_path / "dagster_home"
    home.mkdir()
    storage = {"storage": {"postgres": {"postgres_url": database.render_as_string(hide_password=False)}}}
    with dg.instance_for_test(overrides=storage, temp_dir=str(home)) as instance, freeze_time(NOW):
        instance.add_dynamic_partitions("fiscal_years", ["FY2026"])

        def run(*assets, partition=None, config=None):
            return job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(a) for a in assets],
                                          partition_key=partition, run_config=config, raise_on_error=False)

        def alert_tick(cursor):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=run_failure_alerts.name)
            return run_failure_alerts.evaluate_tick(context).cursor

        cursor = alert_tick(None)
        synced = [
            run("ghl_contacts", partition="2026-11-20-13:00"),
            run("ghl_contacts_reconciliation"),
            run("halo_agents", "agent_mappings"),
            run("halo_timesheets", partition="FY2026",
                config={"ops": {"halo_timesheets": {"config": {"start": "2026-11-16", "end": "2026-11-20"}}}}),
            run("employes_employee_snapshots", "employes_employment_history", "employes_employee_changes",
                partition=NOW.date().isoformat()),
            run("xero_time_entries", partition=DAY.isoformat(),
                config={"ops": {"xero_time_entries": {"config": {"dry_run": False}}}}),
            run("xero_reconciliation"),
        ]
        assert [r.success for r in synced] == [True] * len(synced)
        assert len(emulator.xero.entries()) > 0
        # The doctor's lines, metadata and stored findings are searched too.
        doctor = defs.resolve_job_def("provider_doctor").execute_in_process(instance=instance, raise_on_error=False)
        assert not doctor.success and "base_url" in str(instance.all_logs(doctor.run_id))

        def refused(credentials, name, *assets, partition=None):
            """A run while the provider refuses the credential `name` (rotated in its UI)."""
            kept = getattr(credentials, name)
            setattr(credentials, name, "rotated-in-the-provider")
            result = run(*assets, partition=partition)
            setattr(credentials, name, kept)
            return result

        failed = [refused(emulator.ghl, "token", "ghl_contacts_reconciliation"),
                  refused(emulator.halo, "client_secret", "halo_agents"),
                  refused(emulator.employes, "token", "employes_employee_snapshots", partition=NOW.date().isoformat()),
                  refused(emulator.xero, "client_secret", "xero_reconciliation")]
        emulator.xero.revoke_refresh_tokens()
        failed.append(run("xero_reconciliation"))
        assert [r.success for r in failed] == [False] * len(failed)

        for _ in failed:  # a tick may take fewer runs than have failed
            cursor = alert_tick(cursor)
        health_alerts.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))

    alerts = str(emulator.webhook.messages())
    assert len(emulator.webhook.messages()) == len(failed) + 1  # and the failed doctor run
    tables = dump_database(database)
    tokens = tables.pop(f"{SCHEMA}.xero_tokens")
    captured = capfd.readouterr()
    outputs = {
        "python logging": "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "stdout": captured.out, "stderr": captured.err, "instance files": dump_files(home), "alerts": alerts, **tables,
    }
    assert "HTTP 401" in outputs["public.event_logs"] and "XERO_CLIENT_SECRET" in outputs["public.event_logs"]
    assert f"{SCHEMA}.ghl_contacts" in outputs and "public.runs" in outputs

    issued = [parse_qs(r.body)["refresh_token"][0] for r in emulator.requests("xero", "/connect/token")]
    access = [*emulator.halo.tokens, *emulator.xero._access]
    secret_values = [GHL_TOKEN, HALO_SECRET, EMPLOYES_TOKEN, XERO_SECRET, token_key, DB_PASSWORD, WEBHOOK_TOKEN,
                     *issued, emulator.xero.current_refresh_token, *access]
    searched = {e for s in secret_values for e in encodings(s)}
    searched.add(base64.b64encode(f"{xero_emulator.CLIENT_ID}:{XERO_SECRET}".encode()).decode())
    hits = {(where, s) for where, text in outputs.items() for s in searched if s in text}
    assert hits == set()

    # The token table holds the refresh token encrypted with XERO_TOKEN_KEY, never in clear.
    assert not [s for s in searched if s in tokens]
    with engine_for(warehouse_url).connect() as conn:
        stored = conn.execute(sa.text(f"SELECT refresh_token FROM {SCHEMA}.xero_tokens")).scalar_one()
    assert Fernet(token_key.encode()).decrypt(stored.encode()).decode() == emulator.xero.current_refresh_token
    engine_for(warehouse_url).dispose()
