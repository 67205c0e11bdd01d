"""The production deployment end to end: `deploy/start` runs the code server, webserver and
daemon against a fresh PostgreSQL instance database; the scheduler and the approval sensor fire
on their own (short intervals by configuration), the UI's Materialize button (the webserver's
GraphQL API) runs a sync, a headless Chromium shows the asset graph, and afterwards nothing is
left running."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.definitions.freshness import FreshnessState
from dagster_graphql import DagsterGraphQLClient
from deployment import AGENT, ARTIFACTS, ASSETS_SHOWN, CHROMIUM, IN_PROGRESS, WAIT_S, Deployment, wait_for
from helpers import halo_day, halo_keys, wait_until
from playwright.sync_api import sync_playwright

from providers import NAMES
from resources.settings import PROJECT_ROOT
from resources.xero import XeroResource
from sync_assets.xero_plan import MARKER

pytestmark = pytest.mark.slow  # minutes: left out of the quick run (scripts/test -m "not slow")

@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("deploy"))
    try:
        deployment.wait_until_up()
        yield deployment
    finally:
        deployment.close()


def warehouse_count(deployment, table: str) -> int:
    engine = sa.create_engine(deployment.warehouse_url, connect_args={"options": "-csearch_path=warehouse"})
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def test_the_ui_button_materializes_through_the_webserver(deployment):
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment.web_port)
    run_id = client.submit_job_execution("__ASSET_JOB", repository_location_name="workforce_sync",
                                         repository_name="__repository__", asset_selection=[["halo_agents"], ["agent_mappings"]])
    status = wait_for("the button's run", lambda: (s := client.get_run_status(run_id)) not in IN_PROGRESS and s, seen=deployment.seen)
    assert status == dg.DagsterRunStatus.SUCCESS, deployment.tail()
    assert warehouse_count(deployment, "agent_mappings") == 22


def test_the_scheduler_and_the_approval_sensor_fire_on_their_own(deployment):
    approved_day = deployment.days.approved
    deployment.emulator.halo.approve(AGENT, approved_day)

    def finished(source: str, value: str):
        def check():
            runs = [r for r in deployment.runs() if r.tags.get(source) == value]
            done = [r for r in runs if r.status not in IN_PROGRESS]
            return done[0] if done else None
        return check

    scheduled = wait_for("a scheduled run", finished("dagster/schedule_name", "ghl_contacts_reconciliation_nightly"), seen=deployment.seen)
    pushed = wait_for("a sensor run", finished("dagster/sensor_name", "xero_approvals"), seen=deployment.seen)
    assert scheduled.status == dg.DagsterRunStatus.SUCCESS, deployment.tail()
    assert pushed.status == dg.DagsterRunStatus.SUCCESS, deployment.tail()
    assert pushed.tags["dagster/partition"] == approved_day.isoformat()
    assert warehouse_count(deployment, "ghl_contacts") == 200
    day_entries = list(halo_day(deployment.emulator, AGENT, approved_day).values())  # its work: breaks are never billed
    assert len(deployment.emulator.xero.entries()) == len(day_entries) > 0


def test_the_freshness_daemon_records_the_health_light(deployment):
    key = dg.AssetKey("ghl_contacts_reconciliation")

    def recorded():
        record = deployment.instance.get_freshness_state_records([key]).get(key)
        return record if record and record.freshness_state != FreshnessState.UNKNOWN else None

    assert wait_for("a freshness state", recorded, seen=deployment.seen).freshness_state == FreshnessState.PASS


def run_events(deployment, run_id: str, step: str) -> dict[str, float]:
    """When the run's own events and its `step`'s events first happened, by event type (an engine
    event by its message)."""
    found: dict[str, float] = {}
    for entry in deployment.instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.step_key in (None, step):
            name = event.message if event.event_type == dg.DagsterEventType.ENGINE_EVENT else event.event_type.value
            found.setdefault(name, entry.timestamp)
    return found


def test_a_second_run_of_the_same_day_waits_for_the_xero_pool(deployment):
    emulator, contested_day = deployment.emulator, deployment.days.contested
    emulator.halo.approve(AGENT, contested_day)
    keys = halo_keys(emulator)
    day_entries = {keys[i] for i in halo_day(emulator, AGENT, contested_day)}  # its work: breaks are never billed
    emulator.inject("xero", "slow", delay_s=2, times=2)  # the first push holds the pool for 4 s or more
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment.web_port)
    # In-process steps (a launchpad option) spare a process per step and check; pools hold the same.
    run_ids = [client.submit_job_execution("__ASSET_JOB", repository_location_name="workforce_sync", repository_name="__repository__",
                                           asset_selection=[["xero_time_entries"]], tags={"dagster/partition": contested_day.isoformat()},
                                           run_config={"execution": {"config": {"in_process": {}}}})
               for _ in range(2)]

    def finished():
        statuses = [client.get_run_status(run_id) for run_id in run_ids]
        return statuses if not set(statuses) & set(IN_PROGRESS) else None

    assert wait_for("both runs", finished, seen=deployment.seen) == [dg.DagsterRunStatus.SUCCESS] * 2, deployment.tail()
    first, second = sorted((run_events(deployment, r, "xero_time_entries") for r in run_ids), key=lambda e: e["STEP_START"])
    # The second was queued while the first pushed (however slow the machine), and was held (in the
    # run queue, or at its step with "Step blocked by limit for pool xero") until the first run's
    # step gave the pool back.
    assert second["PIPELINE_ENQUEUED"] < first["STEP_SUCCESS"]  # the second came while the first held the pool
    assert second["STEP_START"] > first["STEP_SUCCESS"]
    assert second["PIPELINE_STARTING"] > first["STEP_SUCCESS"] or "Step blocked by limit for pool xero" in second
    pushed = [MARKER.search(e.get("description") or "") for e in emulator.xero.entries().values()]
    assert sorted(m.group(1) for m in pushed if m and m.group(1) in day_entries) == sorted(day_entries)
    posts = [r for r in emulator.requests("xero", "/Time") if r.method == "POST" and r.body.get("description", "").endswith(
        tuple(f"[halo {k}]" for k in day_entries))]
    assert len(posts) == len(day_entries) > 0


def test_a_failed_push_the_sensor_asked_for_is_retried_by_dagster(deployment):
    # The sensor's cursor has moved past this approval once it asks for the run, so a failed run
    # must be retried (run_retries, and the push job's dagster/max_retries tag).
    emulator, retried_day = deployment.emulator, deployment.days.retried

    def reconciled_once():  # the first sync's run of xero_reconciliation also asks Xero for a token
        return any(r.tags.get("dagster/run_key") == "first-sync-xero_reconciliation" and r.status not in IN_PROGRESS
                   for r in deployment.runs())

    wait_for("the first sync of xero_reconciliation", reconciled_once, seen=deployment.seen)  # so the outage is the push's
    # Xero failing every attempt of the push's first POST, then well again: a failure retrying can
    # fix. (A refused token is not retried: tests/test_run_retries.py.)
    emulator.inject("xero", "500", path="/Time", method="POST", times=XeroResource.model_fields["max_attempts"].default)
    emulator.halo.approve(AGENT, retried_day)

    def day_runs():
        runs = [r for r in deployment.runs() if r.tags.get("dagster/partition") == retried_day.isoformat()]
        return runs if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) else None

    runs = wait_for("the retried push", day_runs, seen=deployment.seen)
    failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
    retried = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
    assert len(failed) == 1 and failed[0].tags["dagster/sensor_name"] == "xero_approvals", deployment.tail()
    assert retried[0].tags["dagster/parent_run_id"] == failed[0].run_id
    keys = halo_keys(emulator)
    day_entries = {keys[i] for i in halo_day(emulator, AGENT, retried_day)}  # its work: breaks are never billed
    pushed = [MARKER.search(e.get("description") or "") for e in emulator.xero.entries().values()]
    assert sorted(m.group(1) for m in pushed if m and m.group(1) in day_entries) == sorted(day_entries) != []


def test_a_browser_shows_the_asset_graph(deployment):
    assert CHROMIUM, "Debian's chromium is needed (.ci/run installs it)"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1600, "height": 1900})
        page.set_default_timeout(WAIT_S * 1000 / 5)  # each wait for an element: two minutes, for a busy machine
        page.goto(deployment.url("/asset-groups"))
        page.get_by_text("Global asset lineage").wait_for()
        page.wait_for_timeout(3000)
        skip = page.get_by_role("button", name="Skip")  # the UI's one-time community invitation
        if skip.is_visible():
            skip.click()
        page.mouse.click(1400, 1800, button="right")
        page.get_by_role("menuitem", name="Expand all groups").click()
        for asset in ASSETS_SHOWN:  # the expanded groups have drawn their assets
            page.get_by_text(asset, exact=True).first.wait_for()
        page.wait_for_timeout(1000)  # edges settle, for the screenshot only
        page.screenshot(path=ARTIFACTS / "asset-graph.png")
        text = page.locator("body").inner_text()
        browser.close()
    for lane in NAMES:
        assert lane in text
    for asset in ASSETS_SHOWN:
        assert asset in text


def api_key(deployment, *scopes: str) -> str:
    """A key made as an operator makes one: `workforce-sync apikey create`."""
    name = f"host-app-{'-'.join(scopes)}"
    args = [sys.executable, "-m", "cli", "apikey", "create", name, *(f"--scope={s}" for s in scopes)]
    done = subprocess.run(args, env=deployment.env, capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    return done.stdout.strip()


def test_a_host_application_reads_status_and_syncs_contacts_through_the_api_only(deployment):
    """The test host application: it knows the proxy's address and a key, nothing else."""
    key = api_key(deployment, "read", "trigger")
    api = httpx.Client(base_url=deployment.proxy_url("/api/v1"), headers={"Authorization": f"Bearer {key}"}, timeout=30)
    status = api.get("/status")
    assert status.status_code == 200, status.text
    assert {row["asset"] for row in status.json()} >= set(ASSETS_SHOWN)
    assert "ghl_contacts_hourly_job" in {sync["sync"] for sync in api.get("/syncs").json()}

    launched = api.post("/syncs/ghl_contacts_hourly_job/runs", json={"triggered_by": "ana@example.com"})
    assert launched.status_code == 202, launched.text
    run_id, partition = launched.json()["run_id"], launched.json()["partition"]
    assert launched.headers["location"] == f"/api/v1/runs/{run_id}"
    again = api.post("/syncs/ghl_contacts_hourly_job/runs", json={"triggered_by": "ana@example.com", "partition": partition})
    # Refused while the first is queued or running; once it is done, a second launch is allowed.
    first = api.get(f"/runs/{run_id}").json()
    if first["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"):
        assert again.status_code == 409 and again.json()["run_id"] == run_id, again.text
        assert again.headers["content-type"] == "application/problem+json"

    def finished():
        state = api.get(f"/runs/{run_id}").json()
        return state if state["status"] not in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED") else None

    state = wait_for("the API's run", finished, seen=deployment.seen)
    assert state["status"] == "SUCCESS", state
    assert state["sync"] == "ghl_contacts_hourly_job" and state["partition"] == partition
    assert state["triggered_by"] == "api: ana@example.com (key host-app-read-trigger)"
    assert state["steps_done"] == state["steps_total"] >= 1 and state["failure"] is None
    row = next(r for r in api.get("/status").json() if r["asset"] == "ghl_contacts")
    assert row["last_success_utc"] is not None and row["light"] == "green"


def test_the_api_behind_the_proxy_refuses_foreign_pages_big_bodies_and_bursts(deployment):
    key = api_key(deployment, "read")
    url = deployment.proxy_url("/api/v1")
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{url}/status").status_code == 401  # no login asked at the proxy, but a key at the API
    foreign = httpx.post(f"{url}/syncs/ghl_contacts_hourly_job/runs", json={"triggered_by": "x"},
                         headers={**bearer, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "cross-site" in foreign.text
    big = httpx.post(f"{url}/events/halopsa/approvals", content=b"{" + b" " * 300_000 + b"}",
                     headers={**bearer, "Content-Type": "application/json"})
    assert big.status_code == 413 and big.headers["content-type"] == "application/problem+json"
    # A burst of cheap requests (refused at the key check): the proxy answers what passes its rate 429.
    with ThreadPoolExecutor(max_workers=20) as pool:  # at once: far past 10 a second and a burst of 20
        answers = list(pool.map(lambda _: httpx.get(f"{url}/status", timeout=60).status_code, range(80)))
    assert set(answers) == {401, 429}, answers


def test_stopping_leaves_nothing_running(deployment):
    wait_for("runs to finish", lambda: not [r for r in deployment.runs() if r.status in IN_PROGRESS], seen=deployment.seen)
    deployment.stop()

    def still_running() -> list[str]:
        # deploy/start ran in a session of its own: every process it started shares the session id.
        # Zombies (state Z) have exited; only the sandbox's init has not reaped them yet.
        session = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-s", str(deployment.process.pid)],
                                 capture_output=True, text=True).stdout.splitlines()
        return [line for line in session if not line.strip().startswith("Z")]

    # A process deploy/start has just killed may still be on its way out on a busy machine (seen:
    # `R [python3.11]`, its arguments already gone); one it failed to stop stays, and fails here.
    wait_until("every process deploy/start started to exit", lambda: not still_running(), 120, seen=still_running)
    assert not [r for r in deployment.runs() if r.status in IN_PROGRESS]
