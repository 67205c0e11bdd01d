"""Organisations: many on one installation, each its own Dagster code location.

An organisation is declared once, in the YAML file `ORGANISATIONS_FILE` (example:
config/organisations.example.yaml):

    organisations:
      - name: acme                       # the code location, the asset key prefix, the warehouse schema
        providers: [gohighlevel, halopsa] # default: every registered provider; Xero needs HaloPSA (it reads it)
        paused: false                     # true: no code server, so no schedule, sensor or run; state kept
        settings: {GHL_LOCATION_ID: loc1, HALO_BASE_URL: https://acme.halopsa.com, SYNC_TIMEZONE: Europe/Amsterdam}
        secrets: {GHL_TOKEN: ACME_GHL_TOKEN, HALO_CLIENT_SECRET: ACME_HALO_SECRET}

`settings` are values of the settings table (resources/settings.py) for this organisation;
`secrets` name, per secret setting, the environment variable (or Kubernetes secret key) that
holds it. Every organisation runs in a code server of its own (`workforce-sync orgs serve NAME`),
whose environment is built here from the installation's and the organisation's own entries only:
the code inside reads its settings exactly as a one-organisation install does, and another
organisation's credentials are not in its process, nor in the runs it launches. Without the
file an installation is the one organisation of today's settings: location `workforce_sync`, no
prefix, nothing moved.

Why code locations and not one location with an organisation partition dimension or an instance
per organisation: see the README ("Many organisations").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from resources.settings import PROJECT_ROOT, SETTINGS, SETTINGS_BY_NAME, ConfigError

ORG_VARIABLE = "WORKFORCE_ORG"  # set by `orgs serve` in an organisation's code server: its name
NAME_RULE = r"[a-z][a-z0-9_]{0,39}"  # a SQL schema, a Dagster location and an asset key part
# Settings of the installation, not of an organisation: one webserver, one proxy, one instance.
INSTALLATION_SETTINGS = {s.name for s in SETTINGS if s.provider == "access"} | {"ORGANISATIONS_FILE", "API_PORT", "API_LAUNCH_URL",
                                                                                 "DAGSTER_WEBSERVER_URL"}


@dataclass(frozen=True)
class Organisation:
    name: str
    providers: tuple[str, ...] = ()  # () for every registered provider
    paused: bool = False
    settings: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)  # secret setting -> variable that holds it


def _problems(entry: object, index: int, registry: Mapping[str, tuple[str, ...]]) -> tuple[str, list[str]]:
    if not isinstance(entry, dict):
        return f"organisations[{index}]", ["must be a mapping with a name"]
    name = str(entry.get("name", ""))
    where, problems = f"organisation {name!r}" if name else f"organisations[{index}]", []
    if not re.fullmatch(NAME_RULE, name):
        problems.append(f"name must be lower-case letters, digits and _ (starting with a letter, at most 40), not {name!r}")
    unknown = set(entry) - {"name", "providers", "paused", "settings", "secrets"}
    if unknown:
        problems.append("unknown keys " + ", ".join(sorted(unknown)))
    providers = entry.get("providers", [])
    if not isinstance(providers, list) or not set(providers) <= set(registry) or "providers" in entry and not providers:
        problems.append(f"providers must be a non-empty list of {', '.join(registry)}")
    else:
        problems += [f"providers: {name} needs {read} (it reads {read}'s data)"
                     for name in providers for read in registry[name] if read not in providers]
    for key, secret in (("settings", False), ("secrets", True)):
        values = entry.get(key) or {}
        if not isinstance(values, dict):
            problems.append(f"{key} must be a mapping of setting names")
            continue
        for setting_name, value in values.items():
            known = SETTINGS_BY_NAME.get(setting_name)
            if known is None:
                problems.append(f"{key}: {setting_name} is not a setting (README, Configuration)")
            elif setting_name in INSTALLATION_SETTINGS:
                problems.append(f"{key}: {setting_name} is the installation's, not an organisation's")
            elif known.secret != secret:
                problems.append(f"{key}: {setting_name} " + ("is not a secret: put it under settings" if secret else "is a secret: name its variable under secrets"))
            elif secret and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(value)):
                problems.append(f"secrets: {setting_name} must name an environment variable")
    return where, problems


def parse(text: str, registry: Mapping[str, tuple[str, ...]], source: str = "ORGANISATIONS_FILE") -> tuple[Organisation, ...]:
    """The organisations of a file's text; one ConfigError naming every bad entry and key.
    `registry`: each registered provider with those it reads (providers.READS; passed in, as the
    registry's modules import this one)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {error}") from None
    entries = data.get("organisations") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source} must hold a non-empty list `organisations:`")
    problems, names = [], []
    for index, entry in enumerate(entries):
        where, found = _problems(entry, index, registry)
        problems += [f"{where}: {p}" for p in found]
        names.append(entry.get("name") if isinstance(entry, dict) else None)
    problems += [f"organisation {n!r}: declared twice" for n in sorted({n for n in names if n and names.count(n) > 1})]
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return tuple(Organisation(name=e["name"], providers=tuple(e.get("providers", ())), paused=bool(e.get("paused", False)),
                              settings={k: str(v) for k, v in (e.get("settings") or {}).items()},
                              secrets={k: str(v) for k, v in (e.get("secrets") or {}).items()}) for e in entries)


def organisations_file(environ: Mapping[str, str] | None = None) -> Path | None:
    value = (os.environ if environ is None else environ).get("ORGANISATIONS_FILE", "").strip()
    return None if not value else (PROJECT_ROOT / value if not Path(value).is_absolute() else Path(value))


def load(registry: Mapping[str, tuple[str, ...]], environ: Mapping[str, str] | None = None) -> tuple[Organisation, ...]:
    """The declared organisations; () for a one-organisation installation (no ORGANISATIONS_FILE)."""
    path = organisations_file(environ)
    if path is None:
        return ()
    if not path.is_file():
        raise ConfigError(f"ORGANISATIONS_FILE names {path}, which is not a file")
    return parse(path.read_text(), registry, source=str(path))


def find(name: str, registry: Mapping[str, tuple[str, ...]], environ: Mapping[str, str] | None = None) -> Organisation:
    by_name = {o.name: o for o in load(registry, environ)}
    if name not in by_name:
        raise ConfigError(f"no organisation {name!r} in ORGANISATIONS_FILE (declared: {', '.join(by_name) or 'none'})")
    return by_name[name]


def current(environ: Mapping[str, str] | None = None) -> str | None:
    """The organisation this process serves (its code server's WORKFORCE_ORG), or None."""
    return (os.environ if environ is None else environ).get(ORG_VARIABLE, "").strip() or None


def check_served(environ: Mapping[str, str] | None = None) -> None:
    """Refuse to build definitions or run a command outside an organisation where there are
    several: the installation's own settings are nobody's, and would sync with nobody's accounts."""
    if organisations_file(environ) and not current(environ):
        raise ConfigError("ORGANISATIONS_FILE is set, so each organisation is its own code location: run its code server with "
                          "`workforce-sync orgs serve NAME` (or serve-all) and a command with `workforce-sync --org NAME ...`")


def key_prefix() -> list[str]:
    """Every asset key's prefix: the organisation's name, none on a one-organisation install."""
    org = current()
    return [org] if org else []


def scoped(name: str) -> str:
    """An instance-wide name (a pool, a dynamic partitions set) for this organisation:
    `acme_halopsa`, or `halopsa` on a one-organisation install. Pools are per organisation and
    provider because the providers' limits are: GoHighLevel's per location, Halo's per tenant,
    Xero's per organisation."""
    org = current()
    return f"{org}_{name}" if org else name


def environment(org: Organisation, environ: Mapping[str, str], all_orgs: tuple[Organisation, ...] = ()) -> dict[str, str]:
    """The environment of `org`'s code server (and so of its runs): the installation's variables
    without any secret setting and without any variable another organisation names, then `org`'s
    settings and its secrets under their settings' names. Raises ConfigError naming a secret
    whose variable is not set (by name, never its value)."""
    others = {var for o in all_orgs if o.name != org.name for var in o.secrets.values()}
    secret_names = {s.name for s in SETTINGS if s.secret}
    env = {k: v for k, v in environ.items() if k not in others and k not in secret_names and k not in org.secrets.values()}
    env.update(org.settings)
    missing = [f"{name} (from {var})" for name, var in org.secrets.items() if not environ.get(var, "").strip()]
    if missing:
        raise ConfigError(f"organisation {org.name!r}: these secrets' variables are not set: " + ", ".join(missing))
    env.update({name: environ[var] for name, var in org.secrets.items()})
    env[ORG_VARIABLE] = org.name
    env.setdefault("WAREHOUSE_SCHEMA", org.name)  # used where the warehouse is PostgreSQL: each its own schema
    env["ORGANISATION_PROVIDERS"] = ",".join(org.providers)
    return env


def enabled_providers(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The providers this code location builds: the organisation's, or None for all registered."""
    value = (os.environ if environ is None else environ).get("ORGANISATION_PROVIDERS", "").strip()
    return tuple(value.split(",")) if value else None


def socket_path(name: str, home: Path) -> Path:
    """Where `name`'s code server listens: a Unix socket in the instance folder, so adding or
    removing an organisation moves no other's address (ports would shift with the file's order)."""
    return home / "orgs" / f"{name}.sock"


def api_socket_path(name: str, home: Path) -> Path:
    """Where `name`'s host-application API listens (`orgs serve-all --api`); the proxy sends
    /api/v1/orgs/<name>/... there (deploy/nginx/api.conf)."""
    return home / "orgs" / f"{name}.api.sock"


def location_name() -> str:
    """This code location's name in the workspace: the organisation's, else `workforce_sync`."""
    return current() or "workforce_sync"


def workspace(orgs: tuple[Organisation, ...], home: Path) -> str:
    """workspace.yaml for the webserver and daemon: one gRPC code server per organisation that is
    not paused (a paused one's schedules, sensors and runs stop; its state stays in the instance)."""
    lines = ["# Generated by `workforce-sync orgs workspace` from ORGANISATIONS_FILE: one code location per organisation.",
             "load_from:"]
    for org in orgs:
        if not org.paused:
            lines += ["  - grpc_server:", f"      socket: {socket_path(org.name, home)}", f"      location_name: {org.name}"]
    return "\n".join(lines) + "\n"


def asset_key(name: str):
    """The key of this organisation's asset `name` (where code names an asset by its name)."""
    import dagster as dg

    return dg.AssetKey([*key_prefix(), name])
