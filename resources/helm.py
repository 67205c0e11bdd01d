"""Kubernetes through Dagster's official Helm chart (repository https://dagster-io.github.io/helm,
chart `dagster/dagster`, source `helm/dagster/` in dagster-io/dagster): its values file, built from
the same organisation list (ORGANISATIONS_FILE) and the same instance settings (deploy/dagster.yaml)
as the one-machine deployment.

One user-code deployment per organisation, not one for all: each organisation's code server is
its own pod whose environment holds its own settings and, through `envSecrets`, its own
Kubernetes Secret only; with `includeConfigInLaunchedRuns` the chart hands that same ConfigMap and
Secret (and no other) to every run pod the code server's runs get. So a code server or a run of
one organisation cannot read another's credentials, and one organisation's broken code server
(a bad setting, an expired token that stops loading, a crash loop) leaves the others loading and
running. One deployment for all would have needed every organisation's secrets in one pod, which
is what `resources/organisations.py` exists to avoid.

Used by `python -m deploy.helm` (deploy/helm/__main__.py); `main(argv)` is the whole command.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from providers import READS
from resources import organisations
from resources.organisations import Organisation
from resources.settings import PROJECT_ROOT, ConfigError

CHART_REPOSITORY = "https://dagster-io.github.io/helm"
# The chart is released with Dagster's own version number: 1.13.x for dagster 1.13.
CHART_VERSION = "1.13.27"
CODE_SERVER_PORT = 3030  # the chart's own example port for a user deployment
POSTGRES_SECRET = "dagster-postgresql-secret"  # holds the key `postgresql-password`, made by hand
INSTANCE_FILE = PROJECT_ROOT / "deploy" / "dagster.yaml"
CONTRACT_SCHEMA = PROJECT_ROOT / "deploy" / "helm" / "contract.schema.json"
# Where the chart's published values.schema.json (and the user-deployments subchart's) are looked
# for: `deploy/helm/fetch-schema` puts them there (untracked; see deploy/helm/schema/README.md).
CHART_SCHEMA_DIR = PROJECT_ROOT / "deploy" / "helm" / "schema"


def k8s_name(name: str) -> str:
    """An organisation's name as a Kubernetes object name: `_` is not allowed there, `-` is not
    allowed in an organisation's name, so the two cannot collide."""
    return name.replace("_", "-")


def secret_name(org: Organisation) -> str:
    return f"workforce-sync-{k8s_name(org.name)}"


def code_server_env(org: Organisation, all_orgs: Sequence[Organisation]) -> dict[str, str]:
    """The plain (non-secret) environment of `org`'s code server: built by
    organisations.environment itself, as for `orgs serve`, from the organisation's own entries
    only (stand-ins for its secret variables, whose values are never here, then taken out
    again: on Kubernetes they come from the organisation's Secret)."""
    stand_ins = {variable: "from-the-kubernetes-secret" for variable in org.secrets.values()}
    env = organisations.environment(org, stand_ins, tuple(all_orgs))
    for setting_name in org.secrets:
        env.pop(setting_name, None)
    return env


def user_deployment(org: Organisation, all_orgs: Sequence[Organisation], repository: str, tag: str,
                    pull_policy: str = "IfNotPresent") -> dict:
    deployment = {
        "name": k8s_name(org.name),  # also the code location's name in the UI
        "image": {"repository": repository, "tag": tag, "pullPolicy": pull_policy},
        # `dagster code-server start`, as deploy/start runs it: the definitions module of the installed project.
        "codeServerArgs": ["-m", "definitions"],
        "port": CODE_SERVER_PORT,
        # Run pods get this deployment's ConfigMap (its env) and Secret: this organisation's only.
        "includeConfigInLaunchedRuns": {"enabled": True},
        "env": code_server_env(org, all_orgs),
        "envSecrets": [{"name": secret_name(org)}] if org.secrets else [],
    }
    return deployment


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


def _instance(instance_file: Path) -> dict:
    return yaml.safe_load(instance_file.read_text()) or {}


def values(orgs: Sequence[Organisation], repository: str, tag: str, *, postgres_host: str,
           postgres_database: str = "dagster", postgres_username: str = "dagster", postgres_port: int = 5432,
           pull_policy: str = "IfNotPresent", instance_file: Path = INSTANCE_FILE) -> dict:
    """The chart's values for these organisations (paused ones left out: no code server, so no
    schedule, sensor or run; their state stays in the instance). Holds no secret value: the
    instance's password is in the Secret POSTGRES_SECRET, each organisation's in its own."""
    if not orgs:
        raise ConfigError("the Helm values need ORGANISATIONS_FILE: one user deployment per organisation")
    instance = _instance(instance_file)
    monitoring = instance.get("run_monitoring", {})
    retention = copy.deepcopy(instance.get("retention", {}))
    sensor_days = retention.get("sensor", {}).get("purge_after_days")
    if isinstance(sensor_days, dict):
        # The chart's schema wants all four tick kinds; -1 (keep) is Dagster's own default for started ticks.
        sensor_days.setdefault("started", -1)
    return {
        # The viewers' webserver beside the operators', as deploy/start runs it (Dagster refuses
        # every mutation there). The chart puts no login in front of either: see the README.
        "dagsterWebserver": {"enableReadOnly": True},
        "dagster-user-deployments": {
            "enabled": True,
            "enableSubchart": True,
            "deployments": [user_deployment(o, orgs, repository, tag, pull_policy) for o in orgs if not o.paused],
        },
        # Every run in a pod of its own, from its code server's image, with its code server's
        # env and Secret (includeConfigInLaunchedRuns): nothing installation-wide is added here.
        "runLauncher": {"type": "K8sRunLauncher",
                        "config": {"k8sRunLauncher": {"envConfigMaps": [], "envSecrets": [], "envVars": []}}},
        # The instance on an external PostgreSQL; the password only in the Secret POSTGRES_SECRET.
        "postgresql": {"enabled": False, "postgresqlHost": postgres_host, "postgresqlUsername": postgres_username,
                       "postgresqlDatabase": postgres_database, "service": {"port": postgres_port}},
        "generatePostgresqlPasswordSecret": False,
        "global": {"postgresqlSecretName": POSTGRES_SECRET},
        "dagsterDaemon": {
            # No run_coordinator block: Dagster's default is the queued one, and deploy/dagster.yaml's
            # `concurrency: runs:` and `run_queue:` (below) are refused beside a run_coordinator config.
            "runCoordinator": {"enabled": False},
            "runMonitoring": {"enabled": bool(monitoring.get("enabled", False)),
                              **{_camel(k): v for k, v in monitoring.items() if k != "enabled"}},
            "runRetries": {_camel(k): v for k, v in instance.get("run_retries", {}).items()},
        },
        # The run limit, the dequeue interval and the pools (one step at a time per pool) exactly
        # as deploy/dagster.yaml has them, passed through to the chart's dagster.yaml.
        "additionalInstanceConfig": {key: instance[key] for key in ("concurrency", "run_queue") if key in instance},
        "retention": {"enabled": bool(retention),
                      **{kind: {"purgeAfterDays": r["purge_after_days"]} for kind, r in retention.items()}},
        "telemetry": {"enabled": bool(instance.get("telemetry", {}).get("enabled", False))},
    }


def secret_manifest(org: Organisation) -> dict:
    """A template of `org`'s Secret: its keys (the secret settings' names, as the code reads them)
    with empty values, to be filled where the real values live; never a value."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name(org), "labels": {"app.kubernetes.io/part-of": "workforce-sync",
                                                               "workforce-sync/organisation": k8s_name(org.name)}},
            "type": "Opaque",
            "stringData": {name: "" for name in sorted(org.secrets)}}


def kubectl_line(org: Organisation, namespace: str | None = None) -> str:
    """The command that makes `org`'s Secret from the variables the organisations file names (read
    from the operator's shell, so no value is on the command line or in this repository)."""
    parts = ["kubectl", "create", "secret", "generic", secret_name(org)]
    if namespace:
        parts += ["--namespace", namespace]
    parts += [f'--from-literal={name}="${variable}"' for name, variable in sorted(org.secrets.items())]
    return " ".join(parts)


def secret_template_text(org: Organisation, namespace: str | None = None) -> str:
    lines = [f"# Secret of organisation {org.name!r}: fill each value, then `kubectl apply -f` this file",
             "# (and do not commit it filled). Or make it in one go from your shell's variables:",
             f"#   {kubectl_line(org, namespace)}",
             "# Keys and the variables of ORGANISATIONS_FILE they come from:"]
    lines += [f"#   {name} <- {variable}" for name, variable in sorted(org.secrets.items())]
    return "\n".join(lines) + "\n" + yaml.safe_dump(secret_manifest(org), sort_keys=False)


# --- validation --------------------------------------------------------------------------------

def _offline(schema, strip_required: bool):
    """The chart's schema as this machine can check it. Its Kubernetes objects (EnvVar,
    SecretEnvSource, ...) are `$ref`s to kubernetesjsonschema.dev, which cannot be reached from
    here: each is accepted as it comes (under draft 7 a `$ref` replaces its siblings, so nothing
    else of that node is lost). With strip_required, no `required`: Helm validates the chart's
    defaults merged with ours, and those defaults (its values.yaml, not here) fill every required
    key of a mapping."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith(("http://", "https://")):
            return {"$comment": f"not checked here: {ref}"}
        return {k: _offline(v, strip_required) for k, v in schema.items() if not (strip_required and k == "required")}
    if isinstance(schema, list):
        return [_offline(v, strip_required) for v in schema]
    return schema


def _validator(schema: dict):
    import jsonschema

    return jsonschema.Draft7Validator(schema)


def _problems(validator, document, where: str) -> list[str]:
    found = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{where}{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in found]


def chart_schemas(schema_dir: Path = CHART_SCHEMA_DIR) -> tuple[dict, dict] | None:
    """The chart's published values.schema.json and its user-deployments subchart's, or None."""
    main = schema_dir / "values.schema.json"
    sub = schema_dir / "charts" / "dagster-user-deployments" / "values.schema.json"
    if not (main.is_file() and sub.is_file()):
        return None
    return json.loads(main.read_text()), json.loads(sub.read_text())


def validate(document: Mapping, schema_dir: Path | None = CHART_SCHEMA_DIR, contract: Path = CONTRACT_SCHEMA) -> list[str]:
    """Every problem of a values document, [] if none: against our contract (the keys we set, as
    the chart's schema types them; always there), then, where schema_dir holds them, against the
    chart's published schemas: the whole document (its required keys left to the chart's
    defaults) and each user deployment in full (a list's items get no defaults from the chart)."""
    problems = _problems(_validator(json.loads(contract.read_text())), document, "contract: ")
    schemas = chart_schemas(schema_dir) if schema_dir is not None else None
    if schemas is not None:
        main, sub = schemas
        problems += _problems(_validator(_offline(main, strip_required=True)), document, "chart: ")
        deployments = document.get("dagster-user-deployments", {})
        problems += _problems(_validator(_offline(sub, strip_required=True)), deployments, "chart (dagster-user-deployments): ")
        item = _validator(_offline({"$ref": "#/definitions/UserDeployment", "definitions": sub["definitions"]}, strip_required=False))
        for index, deployment in enumerate(deployments.get("deployments") or []):
            problems += _problems(item, deployment, f"chart: dagster-user-deployments.deployments[{index}].")
    return problems


# --- the command --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.helm",
                                     description="Write the values of Dagster's Helm chart and a Secret template per organisation.")
    parser.add_argument("--image", required=True, help="the image repository, e.g. registry.example.com/workforce-sync")
    parser.add_argument("--tag", required=True, help="the image tag")
    parser.add_argument("--postgres-host", required=True, help="the instance's PostgreSQL host")
    parser.add_argument("--postgres-database", default="dagster")
    parser.add_argument("--postgres-username", default="dagster")
    parser.add_argument("--namespace", default=None, help="named in the kubectl lines of the Secret templates")
    parser.add_argument("--out", default="deploy/helm/out", help="folder for values.yaml and secrets/ (default: %(default)s)")
    parser.add_argument("--schema-dir", default=str(CHART_SCHEMA_DIR), help="where the chart's published schemas are (optional)")
    args = parser.parse_args(argv)
    try:
        orgs = organisations.load(READS)
        document = values(orgs, args.image, args.tag, postgres_host=args.postgres_host,
                          postgres_database=args.postgres_database, postgres_username=args.postgres_username)
    except ConfigError as error:
        print(f"helm values: {error}", file=sys.stderr)
        return 1
    problems = validate(document, Path(args.schema_dir))
    if problems:
        print("helm values: the values do not validate:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    out = Path(args.out)
    (out / "secrets").mkdir(parents=True, exist_ok=True)
    header = (f"# Generated by `python -m deploy.helm` from ORGANISATIONS_FILE and deploy/dagster.yaml for\n"
              f"# the chart dagster/dagster {CHART_VERSION} ({CHART_REPOSITORY}). No secret value is in this file.\n")
    (out / "values.yaml").write_text(header + yaml.safe_dump(document, sort_keys=False))
    for org in orgs:
        if not org.paused and org.secrets:
            (out / "secrets" / f"{k8s_name(org.name)}.yaml").write_text(secret_template_text(org, args.namespace))
    checked = "our contract and the chart's schema" if chart_schemas(Path(args.schema_dir)) else "our contract (the chart's schema is not in " + args.schema_dir + ")"
    print(f"wrote {out / 'values.yaml'} and {out / 'secrets'}/; validated against {checked}")
    return 0
