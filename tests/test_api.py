"""The host-application API (api/) in process, over a real instance and warehouse: keys and
scopes, problem+json, `/status` as `status --json`, the refusals of "sync now" (nothing is
launched), and a run read back. Launching through a live webserver is tests/test_deployment.py's."""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from conftest import ghl_resources
from fastapi.testclient import TestClient
from health_daemon import freeze_time

import cli
from api import keys
from api.app import Service, create_app
from sync_assets.ghl import hourly_contacts

PARTITION = "2026-11-20-13:00"
SYNCED_AT = datetime(2026, 11, 20, 14, 2, tzinfo=UTC)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def service(home, sqlite_warehouse_url):
    # A webserver nobody listens on: a launch that gets past the checks answers 503.
    return Service(instance=home, webserver_url="http://127.0.0.1:9", warehouse_url=sqlite_warehouse_url, warehouse_schema=None)


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def bearer(service, *scopes, name="host-app"):
    return {"Authorization": f"Bearer {keys.create(service.engine, name, list(scopes))}"}


def assert_problem(answer, status: int, *words: str):
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == status and body["title"] and body["detail"]
    for word in words:
        assert word in body["detail"], body


def test_no_key_a_malformed_key_and_an_unknown_key_are_401(client, service):
    assert_problem(client.get("/api/v1/status"), 401, "Authorization: Bearer")
    assert_problem(client.get("/api/v1/status", headers={"Authorization": "Bearer nonsense"}), 401, "unknown or revoked")
    real = bearer(service, "read")["Authorization"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    answer = client.get("/api/v1/status", headers={"Authorization": forged})
    assert_problem(answer, 401, "unknown or revoked")
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_revoked_key_is_refused_at_its_next_request(client, service):
    headers = bearer(service, "read")
    assert client.get("/api/v1/syncs", headers=headers).status_code == 200
    keys.revoke(service.engine, "host-app")
    assert_problem(client.get("/api/v1/syncs", headers=headers), 401, "revoked")


def test_a_key_without_the_scope_is_403_and_launches_nothing(client, service, home):
    answer = client.post("/api/v1/syncs/ghl_contacts_hourly_job/runs", json={"triggered_by": "ana"}, headers=bearer(service, "read"))
    assert_problem(answer, 403, "'trigger'")
    assert home.get_runs() == []


def test_keys_are_kept_as_digests_only(service):
    key = keys.create(service.engine, "host-app", ["read"])
    with service.engine.connect() as conn:
        stored = json.dumps([list(row) for row in conn.exec_driver_sql("SELECT * FROM api_keys")], default=str)
    assert key.split(".")[1] not in stored
    assert "host-app" in stored


@pytest.mark.parametrize(("sync", "body", "status", "words"), [
    ("nope", {"triggered_by": "ana"}, 404, ("'nope'", "ghl_contacts_hourly_job")),
    ("ghl_contacts_hourly_job", {}, 422, ("body.triggered_by",)),
    ("ghl_contacts_hourly_job", {"triggered_by": ""}, 422, ("body.triggered_by",)),
    ("ghl_contacts_hourly_job", {"triggered_by": "ana", "partition": "tomorrow"}, 422, ("body.partition", "'tomorrow'")),
    ("halo_timesheets_job", {"triggered_by": "ana"}, 422, ("body.partition",)),
    ("employes_nightly_job", {"triggered_by": "ana", "partition": "x"}, 422, ("body.partition",)),
    ("ghl_contacts_hourly_job", {"triggered_by": "ana"}, 503, ("API_LAUNCH_URL",)),
])
def test_a_launch_that_cannot_be_made_says_why_and_launches_nothing(client, service, home, sync, body, status, words):
    answer = client.post(f"/api/v1/syncs/{sync}/runs", json=body, headers=bearer(service, "trigger"))
    assert_problem(answer, status, *words)
    assert home.get_runs() == []


def test_the_syncs_are_the_jobs_schedules_and_sensors_launch(client, service):
    syncs = {s["sync"]: s for s in client.get("/api/v1/syncs", headers=bearer(service, "read")).json()}
    assert syncs["ghl_contacts_hourly_job"]["launched_by"] == ["schedule ghl_contacts_hourly_schedule"]
    assert syncs["ghl_contacts_reconciliation_nightly"]["job"].startswith("__anonymous_asset_job_")
    assert syncs["xero_push_job"]["assets"] == ["xero_time_entries"] and syncs["xero_push_job"]["partitioned"]
    assert "sensor xero_approvals" in syncs["xero_push_job"]["launched_by"]


def test_status_is_the_json_of_status_json(client, service, home, emulator, sqlite_warehouse_url, capsys):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    with freeze_time(SYNCED_AT):
        synced = dg.materialize([hourly_contacts()], resources=resources, partition_key=PARTITION, instance=home)
    headers = bearer(service, "read")
    with freeze_time(SYNCED_AT + timedelta(minutes=30)):
        answer = client.get("/api/v1/status", headers=headers)
        assert cli.main(["status", "--json"]) == 0
    assert answer.status_code == 200
    assert answer.json() == json.loads(capsys.readouterr().out)
    contacts = next(row for row in answer.json() if row["asset"] == "ghl_contacts")
    assert contacts["light"] == "green" and contacts["last_run"]["run_id"] == synced.run_id
    assert contacts["last_run"]["rows"] == synced.asset_materializations_for_node("ghl_contacts")[0].metadata["written"].value


def test_a_run_reads_back_with_its_steps_rows_and_failure(client, service, home, emulator, sqlite_warehouse_url):
    resources = ghl_resources(emulator, sqlite_warehouse_url)
    with freeze_time(SYNCED_AT):
        synced = dg.materialize([hourly_contacts()], resources=resources, partition_key=PARTITION, instance=home)
        emulator.ghl.token = "revoked"
        failed = dg.materialize([hourly_contacts()], resources=resources, partition_key=PARTITION, instance=home, raise_on_error=False)
    headers = bearer(service, "read")
    good = client.get(f"/api/v1/runs/{synced.run_id}", headers=headers).json()
    assert (good["status"], good["partition"], good["steps_done"], good["steps_total"], good["failure"]) == ("SUCCESS", PARTITION, 1, 1, None)
    assert good["rows"] == synced.asset_materializations_for_node("ghl_contacts")[0].metadata["written"].value
    assert good["started_utc"] and good["finished_utc"]
    bad = client.get(f"/api/v1/runs/{failed.run_id}", headers=headers).json()
    assert bad["status"] == "FAILURE" and bad["steps_done"] == 0 and bad["rows"] == 0
    assert bad["failure"].startswith("ghl_contacts:") and "revoked" not in bad["failure"]
    assert_problem(client.get("/api/v1/runs/no-such-run", headers=headers), 404, "'no-such-run'")


def test_the_openapi_document_describes_every_route_and_its_problems(client):
    document = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/status", "/api/v1/syncs", "/api/v1/syncs/{sync}/runs", "/api/v1/runs/{run_id}",
            "/api/v1/events/gohighlevel/contacts", "/api/v1/events/halopsa/approvals"} <= set(document["paths"])
    launch = document["paths"]["/api/v1/syncs/{sync}/runs"]["post"]
    assert {"202", "401", "403", "404", "409", "422", "503"} <= set(launch["responses"])
    assert "application/problem+json" in launch["responses"]["409"]["content"]
