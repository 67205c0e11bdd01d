"""Every environment variable the code location reads, in one table.

The table is the single source for the production check, `.env.example` and the README's
configuration section (a test keeps those three in step). Secrets are never read here: the
resources bind them with `dg.EnvVar`, so Dagster shows their names, never their values.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import url as sa_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = PROJECT_ROOT / ".local"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the setting, never its value."""


@dataclass(frozen=True)
class Setting:
    name: str
    provider: str
    default: str | None = None
    required: bool = False  # required when SYNC_ENV=production
    secret: bool = False
    doc: str = ""
    kind: str = "text"  # how `check_settings` validates a value: a key of CHECKS


SETTINGS: tuple[Setting, ...] = (
    Setting("SYNC_ENV", "general", "local", doc="`local` (emulator + SQLite) or `production` (real providers)"),
    Setting("ORGANISATIONS_FILE", "general", None,
            doc="YAML file declaring several organisations, each its own code location (resources/organisations.py, "
                "config/organisations.example.yaml); unset: one organisation, these settings"),
    Setting("SYNC_TIMEZONE", "general", "UTC", doc="time zone of schedules and of the hourly/daily partitions' boundaries", kind="timezone"),
    Setting("SYNC_HISTORY_START", "general", None,
            doc="first day (YYYY-MM-DD) of the hourly contacts' and the daily Employes partitions (the report's: the day before); "
                "default the hour before the installation's first start, recorded once in `$DAGSTER_HOME/installed.json`", kind="date"),
    Setting("WAREHOUSE_URL", "general", None, required=True, secret=True,
            doc="SQLAlchemy URL of the warehouse; local default `sqlite:///.local/warehouse.db`", kind="sqlalchemy_url"),
    Setting("WAREHOUSE_SCHEMA", "general", None,
            doc="PostgreSQL schema of the warehouse's tables (created if missing); default the URL's search_path", kind="sql_name"),
    Setting("EMULATOR_URL", "general", "http://127.0.0.1:8700", doc="provider emulator used when SYNC_ENV=local", kind="url"),
    Setting("ALERT_WEBHOOK_URL", "general", None, secret=True,
            doc="Slack-compatible incoming webhook that gets failed-run and red-health alerts; unset: alerts are only logged", kind="url"),
    Setting("DAGSTER_WEBSERVER_URL", "general", "http://127.0.0.1:3000",
            doc="address of the Dagster UI as people reach it, for the links in alerts", kind="url"),
    Setting("API_PORT", "general", "3002", doc="port of the host-application API (`python -m api`) on 127.0.0.1, behind the proxy's /api/", kind="count"),
    Setting("API_LAUNCH_URL", "general", "http://127.0.0.1:3000",
            doc="the operators' Dagster webserver as the API reaches it (loopback, no login): runs are launched through its GraphQL", kind="url"),
    Setting("GHL_BASE_URL", "gohighlevel", "https://services.leadconnectorhq.com", doc="GoHighLevel API v2 base URL", kind="url"),
    Setting("GHL_TOKEN", "gohighlevel", required=True, secret=True, doc="Private Integration Token (scope contacts.readonly)"),
    Setting("GHL_LOCATION_ID", "gohighlevel", required=True, doc="the sub-account (location) whose contacts are synced"),
    Setting("GHL_RECONCILE_CRON", "gohighlevel", "0 2 * * *", doc="cron of the nightly full reconciliation", kind="cron"),
    Setting("GHL_WEBHOOK_PUBLIC_KEY", "gohighlevel", None,
            doc="PEM public key(s) that verify HighLevel's signed webhooks (`X-GHL-Signature` Ed25519, legacy `X-WH-Signature` RSA); "
                "one line with `\\n` for line breaks is fine; default HighLevel's published keys (resources/settings.py)",
            kind="public_keys"),
    Setting("GHL_WEBHOOK_SECRET", "gohighlevel", None, secret=True,
            doc="shared secret a HighLevel workflow's Webhook action sends as header `X-Webhook-Secret`; unset: not accepted"),
    Setting("HALO_BASE_URL", "halopsa", required=True, doc="your HaloPSA instance, e.g. https://yourco.halopsa.com", kind="url"),
    Setting("HALO_AUTH_URL", "halopsa", None, doc="authorisation server; default `$HALO_BASE_URL/auth`", kind="url"),
    Setting("HALO_CLIENT_ID", "halopsa", required=True, doc="API application client id (client credentials)"),
    Setting("HALO_CLIENT_SECRET", "halopsa", required=True, secret=True, doc="API application client secret"),
    Setting("HALO_TENANT", "halopsa", None, doc="tenant name, for hosted Halo instances that need it"),
    Setting("HALO_WEBHOOK_SECRET", "halopsa", None, secret=True,
            doc="shared secret Halo's webhook sends as header `X-Webhook-Secret` (or as the Basic auth password); unset: not accepted"),
    Setting("FISCAL_YEAR_START", "halopsa", "01-01", doc="month and day (MM-DD) on which a fiscal year starts", kind="month_day"),
    Setting("FISCAL_YEAR_FIRST", "halopsa", None,
            doc="earliest fiscal year to add as a partition, e.g. `FY2023`; default the current one", kind="fiscal_year"),
    Setting("HALO_TIME_ZONE", "halopsa", "UTC",
            doc="zone in which Halo's zone-less times are wall-clock times: `UTC` (Halo sends UTC instants) or the tenant's IANA zone; "
                "unverified, `workforce-sync doctor` (check halo_clock) says which reading fits the tenant", kind="timezone"),
    Setting("HALO_APPROVED_STATUSES", "halopsa", "1",
            doc="`approvalstatus` values (comma separated) that mean a timesheet is approved; unverified: Halo documents 0/1/2 without meanings",
            kind="int_list"),
    Setting("HALO_BREAK_NAMES", "halopsa", "break,lunch break,taking a breather,non-working hours",
            doc="charge type or break type names (comma separated, any case) whose time is a break, never pushed to Xero"),
    Setting("HALO_LEAVE_NAMES", "halopsa", "holiday,vacation",
            doc="charge type names (comma separated, any case) whose time is leave, never pushed to Xero"),
    Setting("HALO_YEAR_SYNC_CRON", "halopsa", "40 0 * * *",
            doc="cron of the nightly sync of the whole current fiscal year (the hourly sync reads only the open period)", kind="cron"),
    Setting("HALO_OPEN_PERIOD_DAYS", "halopsa", "31",
            doc="days back from today the hourly timesheet sync covers (its open period); while unset, a set XERO_OPEN_PERIOD_DAYS "
                "is read instead (deprecated)", kind="count"),
    Setting("AGENT_MAPPINGS_FILE", "halopsa", "config/agent_mappings.csv",
            doc="CSV mapping Halo agents to payroll employee numbers and Xero users (relative to the project)"),
    Setting("EMPLOYES_BASE_URL", "employes", "https://connect.employes.nl/v4", doc="Employes API base URL", kind="url"),
    Setting("EMPLOYES_TOKEN", "employes", required=True, secret=True, doc="API token (JWT) generated in Employes"),
    Setting("EMPLOYES_COMPANY_ID", "employes", required=True, doc="the company whose employees are synced"),
    Setting("EMPLOYES_SYNC_CRON", "employes", "30 1 * * *", doc="cron of the nightly employee snapshot", kind="cron"),
    Setting("XERO_API_URL", "xero", "https://api.xero.com", doc="Xero API base URL", kind="url"),
    Setting("XERO_IDENTITY_URL", "xero", "https://identity.xero.com", doc="Xero identity (OAuth2 token) base URL", kind="url"),
    Setting("XERO_CLIENT_ID", "xero", required=True, doc="OAuth2 app client id"),
    Setting("XERO_CLIENT_SECRET", "xero", required=True, secret=True, doc="OAuth2 app client secret"),
    Setting("XERO_REFRESH_TOKEN", "xero", None, secret=True,
            doc="a first refresh token, stored when the warehouse has none (or use `workforce-sync xero-connect`)"),
    Setting("XERO_TOKEN_KEY", "xero", None, required=True, secret=True,
            doc="Fernet key that encrypts the stored refresh token; local default `.local/xero_token.key` (0600)"),
    Setting("XERO_TENANT_ID", "xero", required=True, doc="the Xero organisation (tenant) to push to"),
    Setting("XERO_PUSH_ENABLED", "xero", "false", doc="`true` to write to Xero; until then every push run is a dry run", kind="bool"),
    Setting("XERO_PUSH_WITHOUT_DOCTOR", "xero", "false",
            doc="`true` lets a production push write before `workforce-sync doctor` has passed for HaloPSA and Xero", kind="bool"),
    Setting("XERO_FIRST_DAY", "xero", "2026-01-01", doc="first work date (YYYY-MM-DD) of the Xero push partitions", kind="date"),
    Setting("XERO_APPROVAL_POLL_SECONDS", "xero", "45",
            doc="seconds between the approval sensor's reads of Halo, one request each; an approval event moves a read earlier (bench/approval_latency.py)", kind="count"),
    Setting("XERO_OPEN_PERIOD_DAYS", "xero", "31", doc="days back from today the approval sensor and the reconciliation cover", kind="count"),
    Setting("XERO_PROJECT_MAPPINGS_FILE", "xero", "config/xero_projects.csv",
            doc="CSV mapping Halo clients, contracts and tickets to Xero projects and tasks"),
    Setting("XERO_RECONCILE_CRON", "xero", "45 2 * * *", doc="cron of the nightly Halo / ledger / Xero reconciliation", kind="cron"),
    # Read by deploy/start and deploy/proxy (the production UI's login), not by the code location.
    Setting("WORKFORCE_USERS_FILE", "access", None,
            doc="the UI's users with bcrypt hashes and roles (mode 0600; `workforce-sync user add`); default `$DAGSTER_HOME/users`"),
    Setting("PROXY_HOST", "access", "0.0.0.0", doc="address the proxy (nginx, `deploy/proxy`) listens on"),
    Setting("PROXY_PORT", "access", "8443", doc="port the proxy listens on: the UI's address for people", kind="count"),
    Setting("PROXY_TLS_CERT", "access", None,
            doc="PEM certificate (with its chain) the proxy serves; unset: plain HTTP, only behind a TLS-terminating load balancer"),
    Setting("PROXY_TLS_KEY", "access", None, doc="the certificate's private key (mode 0600)"),
    Setting("PROXY_RUN_DIR", "access", None, doc="the proxy's configuration, pid, temporary files and logs; default `$DAGSTER_HOME/proxy`"),
    Setting("PROXY_FAILED_LOGINS_PER_MINUTE", "access", "10",
            doc="failed logins answered per minute and client address; more wait their turn", kind="count"),
    Setting("VIEWER_WEBSERVER_PORT", "access", "3001", doc="port of the viewers' read-only webserver on 127.0.0.1", kind="count"),
    # Where the steps run (resources/executor.py); the Celery workers: deploy/celery-workers.
    Setting("SYNC_EXECUTOR", "executor", "multiprocess",
            doc="`multiprocess`: steps in processes of the run worker's machine (in its own process for the Xero push, the contact events "
                "and first syncs); `celery`: every step of every job a task on Celery workers (needs PostgreSQL instance storage)", kind="executor"),
    Setting("CELERY_BROKER_URL", "executor", "pyamqp://guest:guest@127.0.0.1:5672//", secret=True,
            doc="RabbitMQ broker of the Celery executor, as the run workers and the workers reach it", kind="broker_url"),
    Setting("CELERY_BACKEND_URL", "executor", "rpc://", secret=True,
            doc="Celery result backend: `rpc://` sends results back over the broker", kind="broker_url"),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


def _url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _sqlalchemy_url(value: str) -> bool:
    try:
        sa_url.make_url(value)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises several types for unparsable URLs
        return False
    return True


def _timezone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ValueError, ZoneInfoNotFoundError):
        return False
    return True


def _month_day(value: str) -> bool:
    match = re.fullmatch(r"(\d{2})-(\d{2})", value)
    try:
        return bool(match) and bool(date(2001, int(match.group(1)), int(match.group(2))))
    except ValueError:
        return False


def _date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _cron(value: str) -> bool:
    from dagster._utils.schedules import is_valid_cron_string  # dagster's own rule for schedules

    return is_valid_cron_string(value)


# HighLevel's published webhook keys, verbatim from its docs (the Webhook Integration Guide and the
# Webhook Authentication Guide, cited in api/events.py): Ed25519 for `X-GHL-Signature`, the only
# signature after 2026-07-01; RSA for the legacy `X-WH-Signature`.
GHL_PUBLISHED_KEYS = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
"""


def public_keys(value: str) -> list:
    """The public keys in `value`: PEM blocks, their line breaks as written or as literal `\\n`
    (an environment variable holds one line). Raises ValueError when a block is not a public key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = value.replace("\\n", "\n").strip()
    blocks = re.findall(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", text, re.DOTALL)
    if not blocks:
        raise ValueError("no PEM public key")
    keys = []
    for block in blocks:
        body = re.sub(r"\s+", "", block.removeprefix("-----BEGIN PUBLIC KEY-----").removesuffix("-----END PUBLIC KEY-----"))
        pem = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + "\n-----END PUBLIC KEY-----\n"
        try:
            keys.append(load_pem_public_key(pem.encode()))
        except UnsupportedAlgorithm as error:
            raise ValueError("not a public key of a known kind") from error
    return keys


def _public_keys(value: str) -> bool:
    try:
        public_keys(value)
    except ValueError:
        return False
    return True


CHECKS = {
    "text": (lambda value: True, ""),
    "url": (_url, "an http(s) URL with a host"),
    "sqlalchemy_url": (_sqlalchemy_url, "a SQLAlchemy URL, e.g. postgresql+psycopg2://user:password@host:5432/db"),
    "sql_name": (lambda value: bool(re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value)), "a lower-case SQL name (letters, digits, _)"),
    "timezone": (_timezone, "an IANA time zone, e.g. Europe/Amsterdam"),
    "cron": (_cron, "a cron expression, e.g. 30 1 * * *"),
    "month_day": (_month_day, "a month and day that exist every year, as MM-DD (e.g. 07-01)"),
    "fiscal_year": (lambda value: bool(re.fullmatch(r"FY\d{4}", value)), "FY and the four-digit year it starts in, e.g. FY2026"),
    "date": (_date, "a date as YYYY-MM-DD"),
    "bool": (lambda value: value.lower() in ("true", "false"), "true or false"),
    "int_list": (lambda value: bool(re.fullmatch(r"\s*-?\d+\s*(,\s*-?\d+\s*)*", value)), "whole numbers separated by commas, e.g. 1 or 1,3"),
    "count": (lambda value: value.isdigit() and int(value) >= 1, "a whole number of at least 1"),
    "public_keys": (_public_keys, "one or more PEM public keys (-----BEGIN PUBLIC KEY----- ...)"),
    "executor": (lambda value: value.lower() in ("multiprocess", "celery"), "multiprocess or celery"),
    "broker_url": (lambda value: bool(re.fullmatch(r"[a-z][a-z0-9+]*://.*", value)), "a URL, e.g. pyamqp://guest:guest@127.0.0.1:5672//"),
}


def check_settings(environ: dict | None = None) -> None:
    """Fail with one message naming every setting whose value is malformed (secrets by name only)."""
    env = os.environ if environ is None else environ
    problems = []
    for s in SETTINGS:
        value = env.get(s.name, "").strip()
        valid, expected = CHECKS[s.kind]
        if value and not valid(value):
            shown = "" if s.secret else f", not {value!r}"
            problems.append(f"{s.name} must be {expected}{shown}")
    if problems:
        raise ConfigError("; ".join(problems))


def setting(name: str, environ: os._Environ | dict | None = None) -> str | None:
    """The value of a non-secret setting: the environment, else its default."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if value:
        return value
    if name == "HALO_AUTH_URL" and setting("HALO_BASE_URL", env):
        return setting("HALO_BASE_URL", env).rstrip("/") + "/auth"
    return SETTINGS_BY_NAME[name].default


def sync_env(environ: dict | None = None) -> str:
    value = (setting("SYNC_ENV", environ) or "local").lower()
    if value not in ("local", "production"):
        raise ConfigError(f"SYNC_ENV must be 'local' or 'production', not {value!r}")
    return value


def check_production(environ: dict | None = None) -> None:
    """Fail with one message naming every required variable that is missing."""
    env = os.environ if environ is None else environ
    enabled = env.get("ORGANISATION_PROVIDERS", "").strip()  # an organisation's code server: its providers only
    wanted = {"general", *(enabled.split(",") if enabled else [s.provider for s in SETTINGS])}
    missing = [s.name for s in SETTINGS if s.required and s.provider in wanted and not env.get(s.name, "").strip()]
    if missing:
        raise ConfigError(
            "SYNC_ENV=production needs these environment variables, which are not set: "
            + ", ".join(missing)
            + " (see .env.example). Nothing falls back to the emulator in production."
        )


def local_data_dir() -> Path:
    """Where the local defaults keep an organisation's data (warehouse, Xero token key):
    `.local`, or `.local/orgs/<name>` in an organisation's code server, so no two share a file."""
    org = os.environ.get("WORKFORCE_ORG", "").strip()
    path = LOCAL_DIR / "orgs" / org if org else LOCAL_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_warehouse_url() -> str:
    return f"sqlite:///{local_data_dir() / 'warehouse.db'}"


# Schedule and sensor ticks are purged by the daemon (as in deploy/dagster.yaml).
# The queued run coordinator takes queued runs every 5 s by default; every second instead, so a
# push asked by an approval event starts without most of that wait (one indexed query a second).
RUN_QUEUE = "run_queue:\n  dequeue_interval_seconds: 1\n"
# Sensors and schedules in threads, as in deploy/dagster.yaml: each organisation's code location
# brings its own, and one thread falls behind at about ten organisations (bench/README.md).
DAEMON_THREADS = "".join(f"{kind}:\n  use_threads: true\n  num_workers: 4\n" for kind in ("sensors", "schedules"))
TICK_RETENTION = ("retention:\n  schedule:\n    purge_after_days: 90\n  sensor:\n    purge_after_days:\n"
                  "      skipped: 7\n      failure: 30\n      success: 90\n")


def ensure_dagster_home() -> Path:
    """Create the instance folder `DAGSTER_HOME` (default `.local/dagster_home`) with telemetry off
    and one step at a time per provider pool (`xero`, `halopsa`, ...), so two runs never add up
    past a provider's limits; run retries on for the jobs that ask for them (the Xero push); queued runs
    taken every second; sensors and schedules in threads; tick retention (these three added to an instance made before it had them); the
    installation's first start (`installed_at`, where the partitions' history starts)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(LOCAL_DIR / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\nrun_retries:\n  enabled: true\n  max_retries: 0\n"
                          "concurrency:\n  pools:\n    default_limit: 1\n" + RUN_QUEUE + DAEMON_THREADS + TICK_RETENTION)
    else:  # an instance made before a setting was added gets it (one the operator set stays)
        text = config.read_text()
        for key, block in (("run_queue", RUN_QUEUE), ("sensors", DAEMON_THREADS), ("retention", TICK_RETENTION)):
            if not re.search(rf"^{key}:", text, re.MULTILINE):
                with config.open("a") as file:
                    file.write(block)
    installed_at(home)
    return home


# -- where the partitions' history starts ------------------------------------------------------
# Dagster has no "start at install": a time-partitioned asset starts at a fixed date, and a new
# installation with a start months back reads "0% filled" over thousands of partitions in the UI.
# So the history starts where the installation did: its first start, recorded once in
# DAGSTER_HOME and never moved (partition keys must not shift under stored materializations), or
# SYNC_HISTORY_START where an operator wants more history (a backfill reaches back to it).
INSTALLED_FILE = "installed.json"
# The start every partitioned asset had before the start was recorded: an instance that already
# has runs keeps it, so its partitions stay where they were.
LEGACY_HISTORY_START = datetime(2026, 1, 1, tzinfo=UTC)


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or LOCAL_DIR / "dagster_home")


def _instance_has_runs() -> bool:
    import dagster as dg

    try:
        with dg.DagsterInstance.get() as instance:
            return instance.get_runs_count() > 0
    except Exception:  # noqa: BLE001 - no readable instance yet: a new installation
        return False


def installed_at(home: Path | None = None) -> datetime:
    """The installation's first start (the hour, UTC), recorded in `DAGSTER_HOME/installed.json`
    the first time it is asked for (by `ensure_dagster_home`, or the code location's first load),
    and read from there ever after. An instance with runs and no record predates the record and
    gets `LEGACY_HISTORY_START`."""
    from dagster._time import get_current_datetime  # honours dagster's freeze_time in tests

    home = home or dagster_home()
    path = home / INSTALLED_FILE
    if not path.exists():
        started = LEGACY_HISTORY_START if _instance_has_runs() else get_current_datetime().astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        home.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("x") as file:  # the first process to start wins; the others read its record
                json.dump({"first_start": started.isoformat()}, file)
        except FileExistsError:
            pass
    return datetime.fromisoformat(json.loads(path.read_text())["first_start"])


def history_start(environ: dict | None = None) -> datetime:
    """Where the synced history starts, in SYNC_TIMEZONE: SYNC_HISTORY_START at midnight, else the
    hour before the installation's first start, so that the hour a first sync takes (the last
    complete one) is a partition from the first minute."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(setting("SYNC_TIMEZONE", environ))
    chosen = setting("SYNC_HISTORY_START", environ)
    if chosen:
        return datetime.combine(date.fromisoformat(chosen), datetime.min.time(), zone)
    return (installed_at() - timedelta(hours=1)).astimezone(zone).replace(minute=0)


def env_example() -> str:
    """The text of `.env.example` (`python -m resources.settings` rewrites the file)."""
    lines = [
        "# workforce-sync configuration. Copy to .env (dagster dev reads it) or set in the environment.",
        "# SYNC_ENV=local needs none of these; SYNC_ENV=production needs every variable marked required.",
    ]
    provider = None
    for s in SETTINGS:
        if s.provider != provider:
            provider = s.provider
            lines += ["", f"# --- {provider} ---"]
        flags = ", ".join(f for f in ("required in production" if s.required else "", "secret" if s.secret else "") if f)
        lines.append(f"# {s.doc}" + (f" ({flags})" if flags else ""))
        lines.append(f"{'' if s.required else '# '}{s.name}={s.default or ''}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | provider | default | production | meaning |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        need = ("required" if s.required else "optional") + (", secret" if s.secret else "")
        rows.append(f"| `{s.name}` | {s.provider} | {f'`{s.default}`' if s.default else '—'} | {need} | {s.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    (PROJECT_ROOT / ".env.example").write_text(env_example())
    print(markdown_table())
