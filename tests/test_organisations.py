"""Many organisations on one installation: each its own code location, keys, pools, warehouse and
credentials; one organisation's broken configuration, mapping file or provider leaves the others
alone.

The declaration and the code servers' environments in-process, then the real thing: one code
server and one API per organisation (`workforce-sync orgs serve`, `orgs api`), `dagster-daemon run`
and the webserver over their generated workspace, the proxy in front of the APIs, and an emulator
per organisation whose ids overlap with the other's."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import httpx
from helpers import assert_warehouse_matches_provider, free_port, halo_day, halo_entries, stop_group, stored_entries, xero_by_halo_id

from emulator import Emulator
from providers import READS
from resources import organisations
from resources.halo import timesheet_row
from resources.settings import PROJECT_ROOT, ConfigError, ensure_dagster_home

BIN = Path(sys.executable).parent

TWO = """
organisations:
  - name: north
    settings: {GHL_LOCATION_ID: loc-north}
    secrets: {GHL_TOKEN: NORTH_GHL_TOKEN, WAREHOUSE_URL: NORTH_WAREHOUSE_URL}
  - name: south
    providers: [gohighlevel]
    paused: true
    secrets: {GHL_TOKEN: SOUTH_GHL_TOKEN}
"""


def test_every_problem_of_the_file_is_named_at_once():
    with pytest.raises(ConfigError) as refused:
        organisations.parse("organisations:\n - name: North\n   providers: [xero]\n   settings: {GHL_TOKEN: x, COLOUR: red}\n"
                            " - name: ok\n - name: ok\n   secrets: {GHL_TOKEN: 'not a variable'}\n", READS)
    message = str(refused.value)
    for problem in ("name must be lower-case", "xero needs halopsa", "GHL_TOKEN is a secret: name its variable under secrets",
                    "COLOUR is not a setting", "'ok': declared twice", "GHL_TOKEN must name an environment variable"):
        assert problem in message, message


def test_a_code_server_gets_its_own_secrets_under_their_settings_names_and_no_other_organisations():
    north, south = orgs = organisations.parse(TWO, READS)
    environ = {"PATH": "/usr/bin", "NORTH_GHL_TOKEN": "n-token", "NORTH_WAREHOUSE_URL": "sqlite:///n.db", "SOUTH_GHL_TOKEN": "s-token",
               "GHL_TOKEN": "an installation-wide token"}
    env = organisations.environment(north, environ, orgs)
    assert env["GHL_TOKEN"] == "n-token" and env["WAREHOUSE_URL"] == "sqlite:///n.db" and env["GHL_LOCATION_ID"] == "loc-north"
    assert env["WORKFORCE_ORG"] == "north" and env["WAREHOUSE_SCHEMA"] == "north" and env["PATH"] == "/usr/bin"
    assert "s-token" not in env.values() and "SOUTH_GHL_TOKEN" not in env and "an installation-wide token" not in env.values()
    with pytest.raises(ConfigError, match=r"NORTH_GHL_TOKEN") as missing:
        organisations.environment(north, {"NORTH_WAREHOUSE_URL": "sqlite:///n.db"}, orgs)
    assert "sqlite" not in str(missing.value)


def test_a_paused_organisation_has_no_code_location():
    workspace = organisations.workspace(organisations.parse(TWO, READS), Path("/srv/home"))
    assert "location_name: north" in workspace and "/srv/home/orgs/north.sock" in workspace and "south" not in workspace


def test_with_several_organisations_nothing_runs_as_nobody(tmp_path, monkeypatch):
    (tmp_path / "orgs.yaml").write_text(TWO)
    monkeypatch.setenv("ORGANISATIONS_FILE", str(tmp_path / "orgs.yaml"))
    monkeypatch.delenv("WORKFORCE_ORG", raising=False)
    done = subprocess.run([str(BIN / "workforce-sync"), "status"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")})
    assert done.returncode == 2 and "workforce-sync --org NAME" in done.stderr, done.stderr


# -- under the real daemon ----------------------------------------------------------------------
def wait_for(what: str, check, seconds: float, seen=lambda: ""):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(3)
    raise AssertionError(f"{what}: not within {seconds:.0f} s. Seen: {seen()}")


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def synced(instance, org: str, names) -> list[str]:
    """The assets of `org` among `names` with no materialization yet."""
    return [n for n in names if not instance.get_latest_materialization_event(dg.AssetKey([org, n]))]


def status(org: str, env: dict) -> dict[str, str | None]:
    """`workforce-sync --org ORG status --json`: each asset's light."""
    done = subprocess.run([str(BIN / "workforce-sync"), "--org", org, "status", "--json"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return {row["asset"]: row["light"] for row in json.loads(done.stdout)}


def unapproved_day(emulator) -> tuple[int, date]:
    """An agent-day of the last days (the approval sensor's open period) with work not yet approved."""
    today = datetime.now(UTC).date()
    return next((agent, day) for (agent, day), sheet in sorted(emulator.halo.timesheets().items(), key=lambda item: item[0][1], reverse=True)
                if today - timedelta(days=4) <= day < today and not timesheet_row(sheet, "")["approved"] and halo_day(emulator, agent, day))


NORTH_ASSETS = ("ghl_contacts", "ghl_contacts_reconciliation", "halo_agents", "agent_mappings", "halo_timesheets",
                "employes_employee_snapshots", "employes_employment_history", "employes_employee_changes", "xero_time_entries")
SOUTH_ASSETS = ("ghl_contacts", "ghl_contacts_reconciliation", "halo_agents", "agent_mappings", "halo_timesheets", "xero_time_entries")


def api_key(org: str, env: dict, *scopes: str) -> str:
    """A key made in `org`'s warehouse (`workforce-sync --org ORG apikey create`)."""
    made = subprocess.run([str(BIN / "workforce-sync"), "--org", org, "apikey", "create", f"{org}-app", *(f"--scope={s}" for s in scopes)],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def step_failures(instance, org: str) -> list[str]:
    """The failed steps' messages of `org`'s runs."""
    runs = [r for r in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            if r.remote_job_origin.location_name == org]
    return [str(e.dagster_event.step_failure_data.error.message) for r in runs
            for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_FAILURE) if e.dagster_event.step_failure_data.error]


@pytest.mark.slow
def test_two_organisations_sync_side_by_side_each_into_its_own_warehouse_and_a_broken_third_and_fourth_change_nothing(tmp_path):
    """north (all four providers) and south (all but Employes), each pushing to its own Xero,
    against emulators whose Halo ids overlap; east's mapping file is broken and west's
    configuration does not load. North's and south's warehouses each match their own emulator
    exactly; each one's API key reaches its own organisation only; north's Xero keeps taking
    north's entries while south's Xero token is revoked and then south's providers are down;
    and no process or run of one holds another's secrets."""
    home = tmp_path / "dagster_home"
    emulators = {name: Emulator(seed=seed, anchor=datetime.now(UTC), contacts=60, agents=3, employees=6)
                 for name, seed in (("north", 7), ("south", 8), ("east", 9))}
    for emulator in emulators.values():
        emulator.start()
    (tmp_path / "broken.csv").write_text("halo_agent_id,employee_number\nnot a number,E1\n")
    (tmp_path / "organisations.yaml").write_text(f"""
organisations:
  - name: north
    settings: {{EMULATOR_URL: "{emulators['north'].url}", XERO_PUSH_ENABLED: "true", XERO_OPEN_PERIOD_DAYS: "5"}}
    secrets: {{WAREHOUSE_URL: NORTH_WAREHOUSE_URL, GHL_WEBHOOK_SECRET: NORTH_HOOK_SECRET}}
  - name: south
    providers: [gohighlevel, halopsa, xero]
    settings: {{EMULATOR_URL: "{emulators['south'].url}", XERO_PUSH_ENABLED: "true", XERO_OPEN_PERIOD_DAYS: "5"}}
    secrets: {{WAREHOUSE_URL: SOUTH_WAREHOUSE_URL, GHL_WEBHOOK_SECRET: SOUTH_HOOK_SECRET}}
  - name: east
    providers: [halopsa]
    settings: {{EMULATOR_URL: "{emulators['east'].url}", AGENT_MAPPINGS_FILE: "{tmp_path / 'broken.csv'}"}}
    secrets: {{WAREHOUSE_URL: EAST_WAREHOUSE_URL}}
  - name: west
    providers: [gohighlevel]
    settings: {{SYNC_TIMEZONE: Mars/Olympus_Mons}}
""")
    warehouses = {name: f"sqlite:///{tmp_path / name}.db" for name in ("north", "south", "east")}
    secrets = {"NORTH_HOOK_SECRET": "north-hook-5c1e7a", "SOUTH_HOOK_SECRET": "south-hook-93b2d0"}
    env = {k: v for k, v in os.environ.items() if k not in ("XERO_PUSH_ENABLED", "WAREHOUSE_URL", "EMULATOR_URL")}
    web_port, proxy_port = free_port(), free_port()
    env.update({"DAGSTER_HOME": str(home), "SYNC_ENV": "local", "ORGANISATIONS_FILE": str(tmp_path / "organisations.yaml"),
                "API_LAUNCH_URL": f"http://127.0.0.1:{web_port}",
                **{f"{name.upper()}_WAREHOUSE_URL": url for name, url in warehouses.items()}, **secrets})
    os.environ["DAGSTER_HOME"] = str(home)
    ensure_dagster_home()
    (home / "workspace.yaml").write_text(subprocess.run([str(BIN / "workforce-sync"), "orgs", "workspace"], env=env, check=True,
                                                        capture_output=True, text=True).stdout)
    log = tmp_path / "processes.log"
    servers = {name: start([str(BIN / "workforce-sync"), "orgs", "serve", name], env, log) for name in ("north", "south", "east", "west")}
    apis = {name: start([str(BIN / "workforce-sync"), "orgs", "api", name], env, log) for name in ("north", "south")}
    daemon = None
    try:
        wait_for("every code server's socket", lambda: all(organisations.socket_path(n, home).exists() for n in servers), 300, log.read_text)
        daemon = start([str(BIN / "dagster-daemon"), "run", "-w", str(home / "workspace.yaml")], env, log)
        apis["webserver"] = start([str(BIN / "dagster-webserver"), "-w", str(home / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(web_port)],
                                  env, log)
        apis["proxy"] = start([str(PROJECT_ROOT / "deploy/proxy"), "local"], env | {"PROXY_PORT": str(proxy_port),
                                                                                     "DAGSTER_WEBSERVER_PORT": str(web_port)}, log)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            def seen() -> str:
                runs = [(r.tags.get("dagster/sensor_name"), r.asset_selection and sorted(k.to_user_string() for k in r.asset_selection),
                         r.status.value) for r in instance.get_runs(limit=60)]
                return f"north missing {synced(instance, 'north', NORTH_ASSETS)}, south missing {synced(instance, 'south', SOUTH_ASSETS)}; " \
                       f"runs {runs}; log: {log.read_text()[-3000:]}"

            wait_for("north's and south's first syncs", lambda: not synced(instance, "north", NORTH_ASSETS) and not synced(instance, "south", SOUTH_ASSETS),
                     900, seen)
            wait_for("east's mapping load to fail", lambda: instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])), 300, seen)
            wait_for("the runs to finish", lambda: all(r.is_finished for r in instance.get_runs(limit=200)), 300, seen)

            # Each warehouse holds its own organisation's provider, exactly; the ids overlap.
            this_year = (date(datetime.now(UTC).year, 1, 1), date(datetime.now(UTC).year, 12, 31))
            assert set(emulators["north"].halo.entries()) & set(emulators["south"].halo.entries())
            for name in ("north", "south"):
                assert_warehouse_matches_provider(emulators[name], warehouses[name])
                assert stored_entries(warehouses[name], *this_year) == halo_entries(emulators[name], *this_year)

            # Only east failed, and only its mapping load; west never loaded; north and south are green.
            failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            assert {r.remote_job_origin.location_name for r in failed} == {"east"}, seen()
            assert {k.to_user_string() for r in failed for k in r.asset_selection or ()} <= {"east/agent_mappings"}, seen()
            assert "west" not in {r.remote_job_origin.location_name for r in instance.get_runs(limit=500)}
            assert "SYNC_TIMEZONE must be an IANA time zone" in log.read_text()  # west's code server says why it has no definitions
            for name, assets in (("north", NORTH_ASSETS), ("south", SOUTH_ASSETS)):
                lights = status(name, env)
                assert all(lights[f"{name}/{a}"] == "green" for a in assets if a != "xero_time_entries"), lights  # the push has no light
                assert set(lights.values()) <= {"green", None}, lights

            # Each organisation's API, behind the proxy, answers its own key only, shows its own
            # assets, and launches "sync now" in its own code location.
            keys = {name: api_key(name, env, "read", "trigger") for name in ("north", "south")}
            proxy = f"http://127.0.0.1:{proxy_port}/api/v1/orgs"

            def api(org: str, key: str, method: str = "GET", path: str = "/status", **kwargs) -> httpx.Response:
                return httpx.request(method, f"{proxy}/{org}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)

            wait_for("the proxy and the organisations' APIs", lambda: api("north", keys["north"]).status_code == 200, 300, seen)
            assert {row["asset"].split("/")[0] for row in api("south", keys["south"]).json()} == {"south"}
            assert (api("south", keys["north"]).status_code, api("north", keys["south"]).status_code) == (401, 401)
            launched = api("north", keys["north"], "POST", "/syncs/halo_agents_hourly/runs", json={"triggered_by": "ana@example.com"})
            assert launched.status_code == 202, launched.text
            assert launched.headers["location"] == f"/api/v1/orgs/north/runs/{launched.json()['run_id']}"
            north_run = launched.headers["location"].removeprefix("/api/v1/orgs/north")
            finished = wait_for("north's sync-now run", lambda: (s := api("north", keys["north"], path=north_run).json())["status"]
                                in ("SUCCESS", "FAILURE") and s, 300, seen)
            assert finished["status"] == "SUCCESS", finished
            assert instance.get_run_by_id(finished["run_id"]).remote_job_origin.location_name == "north"
            assert api("south", keys["south"], path=north_run).status_code == 404  # south's key sees no run of north's

            # South's Xero token is revoked; an approval in each: north's reaches north's Xero
            # with north's times, south's push fails saying how to reconnect.
            south_xero = emulators["south"].xero.entries()
            emulators["south"].xero.revoke_refresh_tokens()
            emulators["south"].xero.expire_access_tokens()
            north_days = []

            def approve_in_north() -> None:
                agent, day = unapproved_day(emulators["north"])
                emulators["north"].halo.approve(agent, day)
                north_days.append(halo_day(emulators["north"], agent, day))

            def north_pushed() -> bool:
                pushed = xero_by_halo_id(emulators["north"])
                return all(set(work) <= set(pushed) for work in north_days)

            agent, day = unapproved_day(emulators["south"])
            emulators["south"].halo.approve(agent, day)
            approve_in_north()
            wait_for("south's push to fail on its revoked token", lambda: any("xero-connect" in m for m in step_failures(instance, "south")),
                     300, seen)
            wait_for("north's approved day in north's Xero", north_pushed, 300, seen)
            assert emulators["south"].xero.entries() == south_xero

            # South's providers go down; north's next approval still reaches north's Xero.
            emulators["south"].stop()
            approve_in_north()
            wait_for("north's second approved day in north's Xero", north_pushed, 300, seen)
            pushed = xero_by_halo_id(emulators["north"])
            assert all(sum(e["duration"] for e in pushed[i]) == emulators["north"].halo.minutes(i) for work in north_days for i in work)
            assert not emulators["east"].xero.entries()
            assert not [r for r in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
                        if r.remote_job_origin.location_name == "north"], seen()
            assert set(status("north", env).values()) <= {"green", None}

            # No process of one organisation holds another's secret, nor does any run's log.
            for name, process in servers.items():
                if process.poll() is None:
                    environ = Path(f"/proc/{process.pid}/environ").read_bytes().decode(errors="replace")
                    others = [v for k, v in secrets.items() if not k.startswith(name.upper())]
                    assert not any(value in environ for value in others), name
            for run in instance.get_runs(limit=500):
                text = "\n".join(str(e.dagster_event or e.user_message) for e in instance.all_logs(run.run_id))
                own = run.remote_job_origin.location_name.upper()
                assert not any(value in text for key, value in secrets.items() if not key.startswith(own)), run.run_id
    finally:
        for process in [*servers.values(), *apis.values(), daemon]:
            if process is not None:
                stop_group(process)
        for emulator in emulators.values():
            emulator.stop()
