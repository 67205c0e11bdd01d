"""`workforce-sync`: the headless way to run the syncs (and the fallback when the UI is down).

    workforce-sync run-once                 materialize every sync once, print a per-asset summary
    workforce-sync add-fiscal-years FY2023  add the fiscal years from FY2023 to the current one
                                            as partitions, so their history can be backfilled
    workforce-sync xero-connect < token     store a Xero refresh token (first connection, or after
                                            Xero refused the stored one); read from stdin so it
                                            stays out of the shell history
    workforce-sync doctor [--json]          read-only checks of every provider's assumptions, one line
                                            each (PASS / WARN / FAIL); exits 1 on any FAIL
    workforce-sync status                   one line per asset: health light, last success, last
                                            failure and its run; exits 1 while any light is red
    workforce-sync status --json            the same per asset as JSON, with the last run's start,
                                            finish and result, the next scheduled start, and
                                            whether the first sync has happened
    workforce-sync user add NAME --role viewer|operator
                                            add a user of the production UI, or change one's
                                            password and role (password from the terminal, or
                                            the first line of stdin); `user remove NAME`, `user list`
    workforce-sync apikey create NAME --scope read [--scope trigger --scope events]
                                            a key of the host-application API (printed once);
                                            `apikey revoke NAME`, `apikey list`

Runs are recorded in the Dagster instance at `DAGSTER_HOME` (default `.local/dagster_home`,
the one `scripts/start` uses), so they show up in the UI's run history and health light.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

import users
from api import keys as api_keys
from providers import NAMES, READS, doctor_checks
from resources import organisations
from resources.health import health, policies_of
from resources.settings import ConfigError, ensure_dagster_home
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar, MalformedKey
from sync_assets.runs import TRIGGER_TAG, today

FAILED_RUNS_SCANNED = 200  # `status` looks for each asset's last failure among this many newest failed runs


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_failure and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error.message.strip().splitlines()[-1]
    return "failed"


def _partition_to_sync(partitions_def, instance: dg.DagsterInstance) -> str | None:
    """The last complete hour or day; for fiscal years, the current one (added if missing)."""
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        (key,) = add_fiscal_years(instance, None)[-1:]
        return key
    return partitions_def.get_last_partition_key()


def add_fiscal_years(instance: dg.DagsterInstance, first: str | None) -> list[str]:
    """Add fiscal-year partitions from `first` (default the current year) through the current one."""
    calendar = FiscalCalendar.from_settings()
    keys = calendar.keys_through(first or calendar.key_for(today()), today())
    existing = set(instance.get_dynamic_partitions(FISCAL_YEARS.name))
    instance.add_dynamic_partitions(FISCAL_YEARS.name, [k for k in keys if k not in existing])
    return keys


def run_once(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dict]:
    """Materialize every synced asset once: the last complete hour for hourly partitions."""
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    rows = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        partition = _partition_to_sync(node.partitions_def, instance)
        began = time.monotonic()
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[key],
            partition_key=partition,
            raise_on_error=False,
            tags={TRIGGER_TAG: "cli run-once"},
        )
        materializations = result.asset_materializations_for_node(key.to_python_identifier()) if result.success else []
        metadata = {k: v.value for k, v in materializations[0].metadata.items()} if materializations else {}
        rows.append(
            {
                "asset": key.to_user_string(),
                "partition": partition or "-",
                "status": "ok" if result.success else "FAILED",
                "rows": f"{metadata.get('written', '-')}/{metadata.get('fetched', '-')}",
                "requests": metadata.get("requests", "-"),
                "duration_s": f"{time.monotonic() - began:.1f}",
                "health": health(instance, {key: node.freshness_policy})[key].light,
                "error": "" if result.success else _failure_message(result),
            }
        )
    return rows


def print_summary(rows: list[dict]) -> None:
    columns = ["asset", "partition", "status", "rows", "requests", "duration_s", "health"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
    for row in rows:
        if row["error"]:
            print(f"{row['asset']}: {row['error']}")
    print("rows = written/fetched")


def _utc(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%MZ") if timestamp else "-"


def last_failures(instance: dg.DagsterInstance, keys: set[dg.AssetKey]) -> dict[dg.AssetKey, tuple[float, str]]:
    """(when, run id) of each asset's newest failed run, among the newest FAILED_RUNS_SCANNED failed
    runs. A failed run counts against the assets it planned and did not materialize."""
    # Imported here, like the definitions in main(): loading the code location reads settings,
    # and a bad one must end as a clean ConfigError there, not as a traceback at import.
    from sensors.alerts import assets_not_synced

    found: dict[dg.AssetKey, tuple[float, str]] = {}
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=FAILED_RUNS_SCANNED)
    for record in records:  # newest first
        if keys <= set(found):
            break
        when = record.end_time or record.update_timestamp.timestamp()
        for key in assets_not_synced(instance, record.dagster_run):
            if key in keys and key not in found:
                found[key] = (when, record.dagster_run.run_id)
    return found


def status(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dict]:
    """Every asset of the code location: its health light (`resources.health`, the one the alerts
    and the daily report show), last success, and last failure with its run."""
    lights = health(instance, policies_of(defs.resolve_asset_graph()))
    failures = last_failures(instance, set(lights))
    rows = []
    for key, light in lights.items():
        failed_at, failed_run = failures.get(key, (None, "-"))
        rows.append({"asset": key.to_user_string(), "health": light.light, "last_success_utc": _utc(light.last_success),
                     "last_failure_utc": _utc(failed_at), "failed_run": failed_run})
    return rows


def print_status(rows: list[dict]) -> None:
    columns = ["asset", "health", "last_success_utc", "last_failure_utc", "failed_run"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else None


def _drivers(defs: dg.Definitions) -> tuple[dict, dict]:
    """Per asset, the schedules (name, cron, time zone) and the sensors that start its runs."""
    repo = defs.get_repository_def()
    schedules: dict[dg.AssetKey, list] = {}
    sensors: dict[dg.AssetKey, list[str]] = {}
    for schedule in repo.schedule_defs:
        for key in repo.get_job(schedule.job_name).asset_layer.executable_asset_keys:
            schedules.setdefault(key, []).append((schedule.name, schedule.cron_schedule, schedule.execution_timezone))
    for sensor in repo.sensor_defs:
        for target in sensor.targets:
            if target.job_name != "__ASSET_JOB":  # the first_sync sensor: once, not a cadence
                for key in repo.get_job(target.job_name).asset_layer.executable_asset_keys:
                    sensors.setdefault(key, []).append(sensor.name)
    return schedules, sensors


def _next_start(schedules: list) -> tuple[str | None, str | None]:
    """(when, schedule) of the soonest next tick among `schedules`, by their crons."""
    from dagster._utils.schedules import cron_string_iterator  # dagster's own cron reading, time zones included

    now = get_current_datetime().timestamp()
    ticks = [(next(t for t in cron_string_iterator(now, cron, tz or "UTC") if t.timestamp() > now), name)
             for name, cron, tz in schedules]
    if not ticks:
        return None, None
    when, name = min(ticks)
    return when.astimezone(UTC).isoformat(timespec="seconds"), name


def _rows_written(success, run_id: str) -> int | None:
    """The rows the run wrote for the asset (its `written` metadata), if it materialized it."""
    if success is None or success.run_id != run_id:
        return None
    written = success.asset_materialization.metadata.get("written")
    return int(written.value) if written is not None and isinstance(written.value, (int, float)) else None


def status_json(defs: dg.Definitions, instance: dg.DagsterInstance, rows: list[dict]) -> list[dict]:
    """`status`'s rows with what a host application's sync indicator needs: the last run's start,
    finish and result, the last successful finish, the next scheduled start and what starts the
    runs, and whether the first sync has happened."""
    from sensors.first_sync import first_sync_done

    schedules, sensors = _drivers(defs)
    failures = last_failures(instance, {dg.AssetKey.from_user_string(row["asset"]) for row in rows})
    out = []
    for row in rows:
        key = dg.AssetKey.from_user_string(row["asset"])
        planned = instance.get_latest_planned_materialization_info(key)
        record = instance.get_run_record_by_id(planned.run_id) if planned else None
        success = instance.get_latest_materialization_event(key)
        failed_at, failed_run = failures.get(key, (None, None))
        next_start, next_schedule = _next_start(schedules.get(key, []))
        out.append({
            "asset": row["asset"],
            "light": row["health"] if row["health"] != "-" else None,
            "last_run": None if record is None else {
                "run_id": record.dagster_run.run_id,
                "started_utc": _iso(record.start_time),
                "finished_utc": _iso(record.end_time),
                "result": record.dagster_run.status.value.lower(),
                "rows": _rows_written(success, record.dagster_run.run_id),
            },
            "last_success_utc": _iso(success.timestamp if success else None),
            "last_failure_utc": _iso(failed_at),
            "failed_run": failed_run,
            "next_scheduled_start_utc": next_start,
            "next_schedule": next_schedule,
            "sensors": sorted(sensors.get(key, [])),
            "first_sync_done": first_sync_done(instance, key),
        })
    return out


def xero_connect(defs: dg.Definitions, refresh_token: str) -> str:
    """Store `refresh_token` as the tenant's current one, encrypted, replacing any refused one."""
    if not refresh_token:
        raise ConfigError("xero-connect: no refresh token on stdin")
    xero = defs.resources["xero"].process_config_and_initialize()
    warehouse = defs.resources["warehouse"].process_config_and_initialize()
    xero.token_store(warehouse.engine).store(refresh_token, replace=True)
    return f"stored a new Xero refresh token for tenant {xero.tenant_id}; the next run uses it"


def run_doctor_command(defs: dg.Definitions, as_json: bool, providers: list[str] | None) -> int:
    from resources.doctor import as_json as findings_json, exit_code, iter_lines, run_doctor
    from resources.settings import sync_env

    resources = {name: defs.resources[name].process_config_and_initialize() for name in (*NAMES, "mapping_files", "warehouse")}
    findings = run_doctor(doctor_checks(tuple(providers) if providers else None), resources, production=sync_env() == "production")
    print(findings_json(findings) if as_json else "\n".join(iter_lines(findings)))
    return exit_code(findings)


def read_password(name: str) -> str:
    """From the terminal (asked twice, not echoed), else the first line of stdin (for scripts)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("again: ") != password:
        raise users.UsersError("the two passwords differ; nothing changed")
    return password


def manage_users(args: argparse.Namespace) -> str:
    path = users.users_file()
    if args.user_command == "add":
        return users.add_user(path, args.name, read_password(args.name), args.role)
    if args.user_command == "remove":
        return users.remove_user(path, args.name)
    listed = users.read_users(path)
    return "\n".join(f"{name}  {role}" for name, (_, role) in listed.items()) or f"no users in {path}"


def manage_api_keys(args: argparse.Namespace) -> str:
    from api.app import service_from_environment

    engine = service_from_environment().engine
    if args.apikey_command == "create":
        return api_keys.create(engine, args.name, args.scope)
    if args.apikey_command == "revoke":
        api_keys.revoke(engine, args.name)
        return f"revoked the key {args.name!r}"
    rows = api_keys.listing(engine)
    return "\n".join(f"{r['name']}\t{r['scopes']}\tcreated {r['created_at']:%Y-%m-%d %H:%M}\tlast used "
                     f"{r['last_used_at'] or 'never'}" for r in rows) or "no API keys"


def organisation_environment(name: str) -> dict[str, str]:
    """The environment `name`'s code server and commands run with (resources/organisations.py)."""
    all_orgs = organisations.load(READS)
    return organisations.environment(organisations.find(name, READS), os.environ, all_orgs)


def manage_organisations(args: argparse.Namespace) -> str:
    orgs = organisations.load(READS)
    if not orgs:
        raise ConfigError("ORGANISATIONS_FILE is not set: this installation is one organisation (README, Many organisations)")
    if args.orgs_command == "workspace":
        return organisations.workspace(orgs, ensure_dagster_home()).rstrip("\n")
    if args.orgs_command == "serve":
        # The organisation's code server, in its own environment: its runs are launched from it
        # and inherit that environment, so no other organisation's credentials reach them.
        env = organisation_environment(args.name)
        socket = organisations.socket_path(args.name, ensure_dagster_home())
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)  # left by a code server that was killed
        dagster = str(Path(sys.executable).parent / "dagster")
        os.execve(dagster, [dagster, "code-server", "start", "-m", "definitions", "--socket", str(socket),
                            "--location-name", args.name], env)
    if args.orgs_command == "api":
        # The organisation's host-application API, in the same environment: its keys are in its
        # own warehouse, so a key reaches this organisation and no other.
        env = organisation_environment(args.name)
        socket = organisations.api_socket_path(args.name, ensure_dagster_home())
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        os.execve(sys.executable, [sys.executable, "-m", "api", "--uds", str(socket)], env)
    if args.orgs_command == "serve-all":
        return serve_all(orgs, args.workspace, api=args.api)
    return "\n".join(f"{o.name}\t{','.join(o.providers) or 'all'}\t{'paused' if o.paused else 'active'}" for o in orgs)


def serve_all(orgs: tuple, workspace: Path, api: bool = False) -> str:
    """Every active organisation's code server (and with `api` its API), as children stopped
    together; `workspace` is written once all answer, so the webserver and daemon that wait for
    it find every location."""
    import signal
    import subprocess

    home = ensure_dagster_home()
    kinds = {"serve": ("code server", organisations.socket_path)} | ({"api": ("API", organisations.api_socket_path)} if api else {})
    sockets = {(kind, o.name): path(o.name, home) for o in orgs if not o.paused for kind, (_, path) in kinds.items()}
    for socket in sockets.values():
        socket.unlink(missing_ok=True)
    servers = {(kind, name): subprocess.Popen([sys.executable, "-m", "cli", "orgs", kind, name], start_new_session=True)
               for kind, name in sockets}

    def check_running() -> None:
        exited = [f"the {kinds[kind][0]} of {name}" for (kind, name), p in servers.items() if p.poll() is not None]
        if exited:
            raise ConfigError(", ".join(exited) + " exited (its output says why)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while not all(socket.exists() for socket in sockets.values()):
            check_running()
            time.sleep(0.5)
        workspace.write_text(organisations.workspace(orgs, home))
        print(f"workforce-sync: {len(servers)} servers answer ({', '.join(k for _, k in kinds.values())} per organisation); "
              f"workspace {workspace}", flush=True)
        while True:
            check_running()
            time.sleep(1)
    finally:
        for process in servers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the code server does not stop on SIGTERM


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workforce-sync", description="Run the workforce syncs without the UI.")
    parser.add_argument("--org", metavar="NAME", help="run the command as this organisation of ORGANISATIONS_FILE (its settings and secrets only)")
    commands = parser.add_subparsers(dest="command", required=True)
    orgs = commands.add_parser("orgs", help="the organisations of ORGANISATIONS_FILE, each its own code location")
    orgs_commands = orgs.add_subparsers(dest="orgs_command", required=True)
    orgs_commands.add_parser("list", help="list the organisations, their providers and whether they are paused")
    orgs_commands.add_parser("workspace", help="print the workspace.yaml of the webserver and daemon: one code server per organisation")
    orgs_serve = orgs_commands.add_parser("serve", help="run an organisation's code server (a Unix socket in DAGSTER_HOME/orgs)")
    orgs_serve.add_argument("name")
    orgs_all = orgs_commands.add_parser("serve-all", help="run every active organisation's code server; write the workspace once they answer")
    orgs_all.add_argument("--workspace", type=Path, required=True, help="where to write the workspace.yaml for the webserver and daemon")
    orgs_all.add_argument("--api", action="store_true", help="and every organisation's API (a Unix socket in DAGSTER_HOME/orgs)")
    orgs_api = orgs_commands.add_parser("api", help="run an organisation's host-application API (a Unix socket in DAGSTER_HOME/orgs)")
    orgs_api.add_argument("name")
    commands.add_parser("run-once", help="materialize every sync once and print a per-asset summary")
    add = commands.add_parser("add-fiscal-years", help="add fiscal-year partitions from FIRST through the current year")
    add.add_argument("first", help="the earliest fiscal year, e.g. FY2023")
    commands.add_parser("xero-connect", help="store a Xero refresh token read from stdin")
    status_parser = commands.add_parser("status", help="print each asset's health, last success and last failure; exit 1 if any is red")
    status_parser.add_argument("--json", action="store_true", help="print JSON, with the last run, next start and first sync")
    doctor = commands.add_parser("doctor", help="check every provider read-only before syncing; exit 1 on any FAIL")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--provider", action="append", choices=NAMES,
                        help="check only this provider (repeatable)")
    user = commands.add_parser("user", help="manage the users of the production UI (the proxy's users file)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_add = user_commands.add_parser("add", help="add a user, or set an existing one's password and role")
    user_add.add_argument("name")
    user_add.add_argument("--role", choices=users.ROLES, required=True)
    user_remove = user_commands.add_parser("remove", help="remove a user")
    user_remove.add_argument("name")
    user_commands.add_parser("list", help="list the users and their roles")
    apikey = commands.add_parser("apikey", help="manage the keys of the host-application API (api/)")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    apikey_create = apikey_commands.add_parser("create", help="create a key for a client application; it is printed once")
    apikey_create.add_argument("name")
    apikey_create.add_argument("--scope", action="append", choices=api_keys.SCOPES, required=True,
                               help="read (status, runs), trigger (launch syncs), events (post events); repeatable")
    apikey_revoke = apikey_commands.add_parser("revoke", help="revoke a key: its next request is refused")
    apikey_revoke.add_argument("name")
    apikey_commands.add_parser("list", help="list the active keys (names, scopes, last use; never the keys)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = argument_parser().parse_args(argv)
    if args.org:  # the same command again, in the organisation's own environment
        try:
            env = organisation_environment(args.org)
        except ConfigError as error:
            print(f"workforce-sync: {error}", file=sys.stderr)
            return 2
        rest = [a for i, a in enumerate(argv) if a != "--org" and not a.startswith("--org=") and (i == 0 or argv[i - 1] != "--org")]
        os.execve(sys.executable, [sys.executable, "-m", "cli", *rest], env)
    # Commands that need neither the instance nor the code location's settings (users: a file;
    # API keys: the warehouse only), and the error each answers with exit code 2.
    standalone = {"user": (manage_users, users.UsersError), "apikey": (manage_api_keys, api_keys.ApiKeyError),
                  "orgs": (manage_organisations, ConfigError)}
    if args.command in standalone:
        command, error_type = standalone[args.command]
        try:
            print(command(args))
        except error_type as error:
            print(f"workforce-sync: {error}", file=sys.stderr)
            return 2
        return 0
    ensure_dagster_home()
    try:
        from definitions import defs as load_definitions

        defs = load_definitions()
        with dg.DagsterInstance.get() as instance:
            if args.command == "add-fiscal-years":
                print("fiscal years:", " ".join(add_fiscal_years(instance, args.first)))
                return 0
            if args.command == "xero-connect":
                print(xero_connect(defs, sys.stdin.read().strip()))
                return 0
            if args.command == "doctor":
                return run_doctor_command(defs, args.json, args.provider)
            if args.command == "status":
                rows = status(defs, instance)
                if args.json:
                    print(json.dumps(status_json(defs, instance, rows), indent=2))
                else:
                    print_status(rows)
                return 1 if any(row["health"] == "red" for row in rows) else 0
            rows = run_once(defs, instance)
    except (ConfigError, MalformedKey) as error:
        print(f"workforce-sync: {error}", file=sys.stderr)
        return 2
    print_summary(rows)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
