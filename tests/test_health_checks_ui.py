"""The `health` check in the UI: a real `dagster-webserver` on a temporary instance serves the
code location; the test process syncs `ghl_contacts` at a frozen moment and evaluates the
`health_checks` sensor one, three and seven hours later on the same instance (the webserver
reads the same storage). After each step the asset graph, reloaded in a headless Chromium,
shows the check on the asset's node passed, then warning, then failed."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest
from conftest import ghl_resources
from deployment import CHROMIUM
from health_daemon import freeze_time
from helpers import free_port, stop_group, wait_until
from playwright.sync_api import sync_playwright

from definitions import defs as load_definitions
from resources.settings import PROJECT_ROOT
from sensors.health import health_checks_sensor
from sync_assets.ghl import hourly_contacts

pytestmark = pytest.mark.slow

ghl_contacts = hourly_contacts()
# From the real today: the webserver runs on the real clock, and every moment the test steps to
# (up to 7 h after the sync) must lie in its past.
SYNCED_AT = datetime.now(UTC).replace(minute=2, second=0, microsecond=0) - timedelta(hours=8)
PARTITION = (SYNCED_AT - timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")
WAIT_MS = 180_000  # a shared machine loads the code location slowly


@pytest.fixture
def webserver(tmp_path, monkeypatch, emulator, sqlite_warehouse_url):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("EMULATOR_URL", emulator.url)
    monkeypatch.setenv("WAREHOUSE_URL", sqlite_warehouse_url)
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
                               cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(url + "/server_info", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("the webserver answers", up, WAIT_MS / 1000, every_s=0.5)
        with dg.DagsterInstance.get() as instance:
            yield url, instance
    finally:
        stop_group(process)
        log.close()


def tick(defs, instance, cursor):
    """One sensor tick, its asset events stored as the sensor daemon stores them."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, sensor_name=health_checks_sensor.name)
    result = health_checks_sensor.evaluate_tick(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result.cursor


def checks_row(page) -> tuple[str, list[str]]:
    """The asset node's "Asset checks" row: its text (e.g. "1 / 4 Passed") and the aria labels of
    its status icon, once the row shows a count."""
    skip = page.get_by_role("button", name="Skip")  # the UI's one-time community dialog
    row = page.get_by_text("Asset checks", exact=True).locator("..")
    row.wait_for(timeout=WAIT_MS)
    if skip.count():
        skip.first.click()
    page.wait_for_function("() => [...document.querySelectorAll('*')].some(e => /\\d+ \\/ \\d+ Passed/.test(e.textContent))",
                           timeout=WAIT_MS)
    page.wait_for_timeout(1000)
    labels = row.locator("[aria-label]").evaluate_all("nodes => nodes.map(n => n.getAttribute('aria-label'))")
    return " ".join(row.inner_text().split()), labels


@pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_asset_graph_shows_the_health_check_turn(webserver, emulator, sqlite_warehouse_url):
    url, instance = webserver
    defs = load_definitions()
    with freeze_time(SYNCED_AT):
        assert dg.materialize([ghl_contacts], resources=ghl_resources(emulator, sqlite_warehouse_url),
                              partition_key=PARTITION, instance=instance).success
    cursor = None
    seen = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 2400, "height": 1400})
        for hours in (1, 3, 7):
            with freeze_time(SYNCED_AT + timedelta(hours=hours)):
                cursor = tick(defs, instance, cursor)
            page.goto(url + "/assets/ghl_contacts?view=lineage", timeout=WAIT_MS)
            seen.append(checks_row(page))
        browser.close()
    # The row sums ghl_contacts' four checks (nothing_lost passed in the sync, two others never
    # ran) and its icon is the worst evaluated one: `done` (passed), `warning_outline` (WARN), `close` (ERROR).
    assert seen == [("Asset checks 2 / 4 Passed", ["done"]), ("Asset checks 1 / 4 Passed", ["warning_outline"]),
                    ("Asset checks 1 / 4 Passed", ["close"])]
