"""Production access control, against the real proxy: `deploy/start` (the deployment of
test_deployment.py, on a fresh PostgreSQL database) serves the UI only through nginx, over TLS
with a certificate this test makes, to users added with `workforce-sync user add`. Operators
reach the full webserver, viewers the read-only one; cross-site requests are refused for both."""

import base64
import ipaddress
import os
import re
import stat
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dagster_graphql import DagsterGraphQLClient
from gql.transport.requests import RequestsHTTPTransport
from playwright.sync_api import sync_playwright
from deployment import ARTIFACTS, CHROMIUM, IN_PROGRESS, Deployment, wait_for
from helpers import free_port, stop_group

from providers import NAMES
from resources.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow

OPERATOR = ("olga", "operator-Secret-4f9c2e")
VIEWER = ("victor", "viewer-Secret-8b1d7a")
WRONG = "wrong-Secret-3c5e9f"
PASSWORDS = (OPERATOR[1], VIEWER[1], WRONG)
FOREIGN = "http://evil.example"
# Generous: every request of the UI costs nginx a bcrypt check, on a machine others share.
BROWSER_WAIT_MS = 300_000

LAUNCH_RUN = """mutation($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}"""
LAUNCH_BACKFILL = """mutation($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}"""
RUN_HALO_AGENTS = {"executionParams": {
    "selector": {"repositoryLocationName": "workforce_sync", "repositoryName": "__repository__", "jobName": "__ASSET_JOB",
                 "assetSelection": [{"path": ["halo_agents"]}, {"path": ["agent_mappings"]}]},
    "runConfigData": {},
}}
# Yesterday, a Xero work date on any day the test runs (the deployment runs on the real clock).
BACKFILL_A_DAY = {"backfillParams": {"assetSelection": [{"path": ["xero_time_entries"]}],
                                     "partitionNames": [(date.today() - timedelta(days=1)).isoformat()]}}
ASSETS = "{ assetsOrError { ... on AssetConnection { nodes { key { path } } } } }"
RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"
RUNS_WITH_TAGS = "{ runsOrError { ... on Runs { results { runId tags { key value } } } } }"
LOCATION = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, valid from an hour ago for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "workforce-sync test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = folder / "proxy.crt", folder / "proxy.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert, key_file


class Protected:
    """The deployment and how to reach it from outside: only through the proxy."""

    def __init__(self, deployment: Deployment, users_file: Path, cert: Path):
        self.deployment = deployment
        self.users_file = users_file
        self.cert = cert
        self.port = int(deployment.env["PROXY_PORT"])
        self.origin = f"https://127.0.0.1:{self.port}"
        self.logs = deployment.home / "proxy" / "logs"

    def user_add(self, name: str, password: str, role: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(PROJECT_ROOT / ".venv/bin/workforce-sync"), "user", "add", name, "--role", role],
                              input=password + "\n", capture_output=True, text=True,
                              env={**os.environ, "WORKFORCE_USERS_FILE": str(self.users_file)})

    def request(self, method: str, path: str, auth: tuple[str, str] | None = None, **kwargs) -> httpx.Response:
        return httpx.request(method, self.origin + path, auth=auth, verify=str(self.cert), timeout=120, **kwargs)

    def graphql(self, auth, query: str, variables: dict | None = None, headers: dict | None = None) -> httpx.Response:
        return self.request("POST", "/graphql", auth, json={"query": query, "variables": variables or {}}, headers=headers)

    def client(self, auth) -> DagsterGraphQLClient:
        transport = RequestsHTTPTransport(url=self.origin + "/graphql", use_json=True, auth=auth, verify=str(self.cert), timeout=120)
        return DagsterGraphQLClient("127.0.0.1", transport=transport)

    def run_count(self) -> int:
        """Runs people launched (the first-sync sensor and the schedules launch theirs meanwhile)."""
        return sum(1 for run in self.deployment.runs()
                   if not {"dagster/sensor_name", "dagster/schedule_name"} & set(run.tags))

    def access_log(self) -> str:
        return (self.logs / "access.log").read_text()


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    (tmp / "etc").mkdir()
    users_file = tmp / "etc" / "users"  # outside the project, as in production
    cert, key = self_signed_certificate(tmp)
    deployment = Deployment(tmp, extra_env={"WORKFORCE_USERS_FILE": str(users_file),
                                            "PROXY_TLS_CERT": str(cert), "PROXY_TLS_KEY": str(key)})
    try:
        deployment.wait_until_up()
        protected = Protected(deployment, users_file, cert)
        # Users are added while the proxy runs: it reads the file on every request, no reload.
        for name, password, role in (*OPERATOR, "operator"), (*VIEWER, "viewer"):
            added = protected.user_add(name, password, role)
            assert added.returncode == 0, added.stderr

        def viewer_location_loaded():
            entries = protected.graphql(VIEWER, LOCATION).json()["data"]["workspaceOrError"]["locationEntries"]
            return any(e["loadStatus"] == "LOADED" for e in entries)

        wait_for("the read-only webserver's code location, through the proxy", viewer_location_loaded, 240)
        yield protected
    finally:
        deployment.close()


def test_the_users_file_holds_bcrypt_hashes_readable_by_its_owner_only(protected):
    for path in (protected.users_file, protected.users_file.with_name("users.operators")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = protected.users_file.read_text()
    assert re.fullmatch(r"olga:\$2b\$10\$[./A-Za-z0-9]{53}:operator\nvictor:\$2b\$10\$[./A-Za-z0-9]{53}:viewer\n", text)
    assert not [p for p in PASSWORDS if p in text]
    too_short = protected.user_add("mallory", "short", "operator")
    assert too_short.returncode == 2 and "too short" in too_short.stderr and "mallory" not in protected.users_file.read_text()


@pytest.mark.parametrize("path", ["/", "/asset-groups", "/runs", "/runs/0b8f6c2e-5a11-4f1e-9d55-3f1f9a2b7c10",
                                  "/logs/0b8f6c2e-5a11-4f1e-9d55-3f1f9a2b7c10/compute_logs/x/out", "/graphql"])
def test_nothing_answers_without_a_login(protected, path):
    response = protected.request("GET", path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    posted = protected.request("POST", "/graphql", json={"query": RUNS})
    assert posted.status_code == 401 and "runsOrError" not in posted.text


def test_only_the_proxy_listens_beyond_this_machine(protected):
    env = protected.deployment.env
    listening = {}
    for port in (env["DAGSTER_WEBSERVER_PORT"], env["VIEWER_WEBSERVER_PORT"], env["CODE_SERVER_PORT"]):
        lines = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout.split("\n")
        addresses = {ipaddress.ip_address(line.split()[3].rsplit(":", 1)[0].strip("[]")) for line in lines if line.strip()}
        # The code server's gRPC listens on 127.0.0.1 as IPv6 sees it (::ffff:127.0.0.1).
        listening[port] = {str(getattr(address, "ipv4_mapped", None) or address) for address in addresses}
    assert listening == {port: {"127.0.0.1"} for port in listening}


def test_plain_http_does_not_reach_the_ui(protected):
    response = httpx.get(f"http://127.0.0.1:{protected.port}/", auth=OPERATOR, timeout=60)
    assert response.status_code == 400 and "HTTPS" in response.text


@pytest.fixture(scope="module")
def operator_run(protected) -> tuple[str, dg.DagsterRunStatus]:
    """An operator presses Materialize (the UI's GraphQL call) through the proxy."""
    client = protected.client(OPERATOR)
    run_id = client.submit_job_execution("__ASSET_JOB", repository_location_name="workforce_sync", repository_name="__repository__",
                                         asset_selection=[["halo_agents"], ["agent_mappings"]])
    return run_id, wait_for("the operator's run", lambda: (s := client.get_run_status(run_id)) not in IN_PROGRESS and s, 240)


def test_an_operator_launches_a_run_and_it_succeeds(protected, operator_run):
    assert operator_run[1] == dg.DagsterRunStatus.SUCCESS, protected.deployment.tail()
    assert f"- {OPERATOR[0]} [" in protected.access_log()  # the user is named once logged in


def test_a_viewer_reads_assets_and_runs_but_cannot_launch(protected, operator_run):
    assets = protected.graphql(VIEWER, ASSETS).json()["data"]["assetsOrError"]["nodes"]
    assert {"ghl_contacts", "halo_timesheets", "xero_time_entries"} <= {a["key"]["path"][0] for a in assets}
    runs = protected.graphql(VIEWER, RUNS).json()["data"]["runsOrError"]["results"]
    assert {r["runId"] for r in runs} == {r.run_id for r in protected.deployment.runs()}
    run_id = operator_run[0]
    logs = protected.graphql(VIEWER, '{ logsForRun(runId: "%s") { ... on EventConnection { events { __typename } } } }' % run_id)
    assert "RunSuccessEvent" in {e["__typename"] for e in logs.json()["data"]["logsForRun"]["events"]}, logs.text
    assert protected.request("GET", f"/runs/{run_id}", VIEWER).status_code == 200

    before = protected.run_count()
    launched = protected.graphql(VIEWER, LAUNCH_RUN, RUN_HALO_AGENTS)
    backfill = protected.graphql(VIEWER, LAUNCH_BACKFILL, BACKFILL_A_DAY)
    assert launched.json()["data"]["launchRun"]["__typename"] == "UnauthorizedError", launched.text
    assert backfill.json()["data"]["launchPartitionBackfill"]["__typename"] == "UnauthorizedError", backfill.text
    assert protected.run_count() == before
    assert protected.deployment.instance.get_backfills() == []


@pytest.mark.parametrize("user", [OPERATOR, VIEWER], ids=["operator", "viewer"])
def test_cross_site_requests_are_refused_and_launch_nothing(protected, user):
    before = protected.run_count()
    mutation = "mutation { launchRun(executionParams: {selector: {repositoryLocationName: \"workforce_sync\", " \
               "repositoryName: \"__repository__\", jobName: \"__ASSET_JOB\", assetSelection: [{path: [\"halo_agents\"]}]}}) { __typename } }"
    refused = {
        "POST with a foreign Origin": protected.graphql(user, LAUNCH_RUN, RUN_HALO_AGENTS, headers={"Origin": FOREIGN}),
        "POST with Origin null": protected.graphql(user, LAUNCH_RUN, RUN_HALO_AGENTS, headers={"Origin": "null"}),
        "POST from a sibling site": protected.graphql(user, LAUNCH_RUN, RUN_HALO_AGENTS, headers={"Sec-Fetch-Site": "same-site"}),
        "POST from another site": protected.graphql(user, LAUNCH_RUN, RUN_HALO_AGENTS, headers={"Sec-Fetch-Site": "cross-site"}),
        "GET-borne mutation": protected.request("GET", "/graphql", user, params={"query": mutation}),
        "GET-borne mutation, percent-encoded": protected.request(
            "GET", "/graphql?query=%6D%75tation%20%7B%20setNuxSeen%20%7D", user),
        "GET from an <img> elsewhere": protected.request("GET", "/graphql", user, params={"query": mutation},
                                                         headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}),
        "form POST with the query in the URL": protected.request("POST", "/graphql", user, params={"query": mutation},
                                                                 data={"x": "1"}),
        "report an event from another site": protected.request("POST", "/report_asset_materialization/cross_site_probe", user,
                                                               headers={"Origin": FOREIGN}),
    }
    statuses = {what: response.status_code for what, response in refused.items()}
    assert statuses == {what: 415 if what.startswith("form") else 403 for what in refused}
    assert protected.run_count() == before
    assert protected.deployment.instance.get_latest_materialization_event(dg.AssetKey("cross_site_probe")) is None
    # The same origin, a typed address and links from elsewhere still work.
    own = protected.graphql(user, RUNS, headers={"Origin": protected.origin, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200 and "runsOrError" in own.json()["data"]
    link = protected.request("GET", "/runs", user, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert link.status_code == 200


def test_a_wrong_password_is_refused_and_repeated_ones_are_slowed(protected):
    agent = {"User-Agent": "wrong-password-test"}
    seconds = []
    for _ in range(3):
        started = time.monotonic()
        response = protected.request("GET", "/graphql", (OPERATOR[0], WRONG), headers=agent)
        seconds.append(time.monotonic() - started)
        assert response.status_code == 401
    # nginx writes a request's line once the answer has gone out.
    limits = wait_for("three log lines", lambda: len(found := re.findall(
        r'"wrong-password-test" role=- login_limit=(\w+)', protected.access_log())) == 3 and found, 60)
    assert limits[0] in ("PASSED", "DELAYED") and limits[1:] == ["DELAYED", "DELAYED"], limits
    # nginx held the later ones at 10 a minute (6 s each): a lower bound, whatever the machine's speed.
    assert min(seconds[1:]) > 3, seconds
    assert protected.graphql(OPERATOR, RUNS).status_code == 200  # the right password still works
    assert protected.request("GET", "/graphql").status_code == 401  # a browser's first request is not slowed...


def test_a_removed_user_is_refused_at_once(protected):
    added = protected.user_add("temp", "temporary-Secret-1", "viewer")
    assert added.returncode == 0 and protected.graphql(("temp", "temporary-Secret-1"), RUNS).status_code == 200
    removed = subprocess.run([str(PROJECT_ROOT / ".venv/bin/workforce-sync"), "user", "remove", "temp"], capture_output=True,
                             text=True, env={**os.environ, "WORKFORCE_USERS_FILE": str(protected.users_file)})
    assert removed.returncode == 0, removed.stderr
    assert protected.graphql(("temp", "temporary-Secret-1"), RUNS).status_code == 401


def test_chromium_logs_in_as_an_operator_and_sees_the_asset_graph(protected):
    assert CHROMIUM, "Debian's chromium is needed (.ci/run installs it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(http_credentials={"username": OPERATOR[0], "password": OPERATOR[1]},
                                      ignore_https_errors=True, viewport={"width": 1600, "height": 1200})
        page = context.new_page()
        page.goto(protected.origin + "/asset-groups")
        page.get_by_text("Global asset lineage").wait_for(timeout=BROWSER_WAIT_MS)
        for group in NAMES:  # the graph's lanes, collapsed
            page.get_by_text(group, exact=True).first.wait_for(timeout=BROWSER_WAIT_MS)
        skip = page.get_by_role("button", name="Skip")  # the UI's one-time community invitation
        if skip.is_visible():
            skip.click()
        page.mouse.click(1400, 1100, button="right")
        page.get_by_role("menuitem", name="Expand all groups").click()
        page.get_by_text("xero_time_entries", exact=True).first.wait_for(timeout=BROWSER_WAIT_MS)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "asset-graph-through-the-proxy.png")
        text = page.locator("body").inner_text()
        agent = page.evaluate("navigator.userAgent")
        operator_can_materialize = page.get_by_role("button", name="Materialize all").is_enabled()
        viewer = browser.new_context(http_credentials={"username": VIEWER[0], "password": VIEWER[1]},
                                     ignore_https_errors=True, viewport={"width": 1600, "height": 1200}).new_page()
        viewer.goto(protected.origin + "/asset-groups")
        viewer.get_by_text("xero", exact=True).first.wait_for(timeout=BROWSER_WAIT_MS)
        viewer_button = viewer.get_by_role("button", name="Materialize all")
        viewer_button.wait_for(timeout=BROWSER_WAIT_MS)
        viewer.screenshot(path=ARTIFACTS / "asset-graph-as-a-viewer.png")
        viewer_can_materialize = viewer_button.is_enabled()
        browser.close()
    assert (operator_can_materialize, viewer_can_materialize) == (True, False)
    assert {"ghl_contacts", "halo_timesheets", "employes_employee_snapshots", "xero_time_entries"} <= set(text.split())
    # The guard let every request of the UI itself through (its GraphQL, its websocket).
    browser_lines = [line for line in protected.access_log().splitlines() if agent in line]
    assert browser_lines and not [line for line in browser_lines if re.search(r'" (403|415) ', line)], browser_lines


def test_no_log_holds_a_password(protected):
    credentials = [base64.b64encode(f"{name}:{password}".encode()).decode()
                   for name in (OPERATOR[0], VIEWER[0]) for password in PASSWORDS]
    secrets = [*PASSWORDS, "temporary-Secret-1", *credentials]
    assert protected.request("GET", "/", (VIEWER[0], WRONG)).status_code == 401
    wait_for("the failure in the proxy's error log", lambda: "password mismatch" in (protected.logs / "error.log").read_text(), 60)
    deployment = protected.deployment
    deployment.log.flush()
    texts = {"deploy/start's output (every process)": Path(deployment.log.name).read_text()}
    # The proxy's logs and configuration, Dagster's compute logs and anything else under DAGSTER_HOME.
    for path in deployment.home.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    texts["the runs' event logs"] = "\n".join(str(entry) for run in deployment.runs() for entry in deployment.instance.all_logs(run.run_id))
    assert [where for where, text in texts.items() if any(s in text for s in secrets)] == []


def test_scripts_start_in_production_refuses_cross_site_requests_without_a_login(tmp_path):
    """`scripts/start` with real providers: no login on 127.0.0.1, but any page in a browser on
    this machine could reach it, so the cross-site guard stands in front of `dagster dev`."""
    from cryptography.fernet import Fernet

    dead = "http://127.0.0.1:9"  # no provider is reached: the schedules' runs just fail
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SYNC_ENV", "DAGSTER_PORT")}
    env |= {"SYNC_ENV": "production", "DAGSTER_HOME": str(tmp_path / "home"), "DAGSTER_PORT": str(port),
            "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}", "GHL_BASE_URL": dead, "GHL_TOKEN": "t", "GHL_LOCATION_ID": "l",
            "HALO_BASE_URL": dead, "HALO_CLIENT_ID": "c", "HALO_CLIENT_SECRET": "s", "EMPLOYES_BASE_URL": dead,
            "EMPLOYES_TOKEN": "t", "EMPLOYES_COMPANY_ID": "c", "XERO_API_URL": dead, "XERO_IDENTITY_URL": dead,
            "XERO_CLIENT_ID": "c", "XERO_CLIENT_SECRET": "s", "XERO_TOKEN_KEY": Fernet.generate_key().decode(), "XERO_TENANT_ID": "t"}
    ui = f"http://127.0.0.1:{port}"
    log = (tmp_path / "start.log").open("w")
    process = subprocess.Popen([str(PROJECT_ROOT / "scripts/start")], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)

    def runs():
        """The runs launched by hand (the schedules' and sensors' own runs come and go meanwhile)."""
        assert process.poll() is None, Path(log.name).read_text()[-3000:]
        try:
            response = httpx.post(ui + "/graphql", json={"query": RUNS_WITH_TAGS}, timeout=30)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return False
        return [r for r in response.json()["data"]["runsOrError"]["results"]
                if not {t["key"] for t in r["tags"]} & {"dagster/schedule_name", "dagster/sensor_name", "dagster/backfill"}]

    try:
        wait_for("scripts/start's UI", lambda: runs() is not None and runs() is not False, 240)
        before = len(runs())
        foreign = httpx.post(ui + "/graphql", json={"query": LAUNCH_RUN, "variables": RUN_HALO_AGENTS},
                             headers={"Origin": FOREIGN}, timeout=30)
        from_an_img = httpx.get(ui + "/graphql", params={"query": "mutation { setNuxSeen }"},
                                headers={"Sec-Fetch-Site": "cross-site"}, timeout=30)
        assert (foreign.status_code, from_an_img.status_code) == (403, 403)
        assert len(runs()) == before
        assert httpx.get(ui + "/asset-groups", timeout=30).status_code == 200  # no login: 127.0.0.1 only
    finally:
        stop_group(process)
        log.close()
