"""The values of Dagster's Helm chart generated from the organisation list (resources/helm.py)."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from providers import READS
from resources import helm, organisations

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "organisations.example.yaml"
ORGS = organisations.parse(EXAMPLE.read_text(), READS)
needs_chart_schema = pytest.mark.skipif(helm.chart_schemas() is None,
                                        reason="the chart's schemas are not in deploy/helm/schema/ (deploy/helm/fetch-schema)")


def generated(orgs=ORGS) -> dict:
    return helm.values(orgs, "registry.example.com/workforce-sync", "0.1.0", postgres_host="db.internal")


def deployments(document: dict) -> dict[str, dict]:
    return {d["name"]: d for d in document["dagster-user-deployments"]["deployments"]}


def test_the_example_organisations_values_validate_against_the_contract():
    assert helm.validate(generated(), schema_dir=None) == []


@needs_chart_schema
def test_the_example_organisations_values_validate_against_the_charts_published_schema():
    assert helm.validate(generated()) == []


def test_a_wrong_type_is_rejected():
    document = generated()
    deployments(document)["acme"]["port"] = "3030"
    document["runLauncher"]["type"] = "K8sLauncher"
    problems = helm.validate(document, schema_dir=None)
    assert any("deployments.0.port" in p and "'3030' is not of type 'integer'" in p for p in problems), problems
    assert any(p.startswith("contract: runLauncher.type") for p in problems), problems


@needs_chart_schema
def test_the_charts_schema_rejects_a_wrong_type_and_a_deployment_without_its_port():
    document = generated()
    document["postgresql"]["service"]["port"] = "5432"
    del deployments(document)["globex"]["port"]
    chart = [p for p in helm.validate(document) if p.startswith("chart")]
    assert any("postgresql.service.port" in p for p in chart), chart
    assert any("deployments[1]" in p and "'port' is a required property" in p for p in chart), chart


def test_a_paused_organisation_has_no_code_server():
    paused = tuple(replace(o, paused=True) if o.name == "globex" else o for o in ORGS)
    assert set(deployments(generated(paused))) == {"acme"}


def test_each_code_server_names_only_its_own_organisations_secret():
    by_name = deployments(generated())
    for org in ORGS:
        deployment = by_name[helm.k8s_name(org.name)]
        assert deployment["envSecrets"] == [{"name": helm.secret_name(org)}]
        others = {var for o in ORGS if o is not org for var in o.secrets.values()}
        # No secret setting and no variable of any organisation in the plain env: those come from its Secret only.
        assert not set(deployment["env"]) & (set(org.secrets) | set(org.secrets.values()) | others)
        assert deployment["env"]["WORKFORCE_ORG"] == org.name
        assert deployment["env"]["ORGANISATION_PROVIDERS"] == ",".join(org.providers)
        assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert generated()["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"] == []


def test_the_secret_templates_list_key_names_and_never_a_value():
    acme = next(o for o in ORGS if o.name == "acme")
    text = helm.secret_template_text(acme)
    manifest = yaml.safe_load(text)
    assert manifest["metadata"]["name"] == "workforce-sync-acme"
    assert manifest["stringData"] == {name: "" for name in acme.secrets}
    assert '--from-literal=GHL_TOKEN="$ACME_GHL_TOKEN"' in helm.kubectl_line(acme)
    assert "GLOBEX" not in text


def test_run_limit_and_pools_are_those_of_deploy_dagster_yaml():
    instance = yaml.safe_load(helm.INSTANCE_FILE.read_text())
    extra = generated()["additionalInstanceConfig"]
    assert extra["concurrency"] == instance["concurrency"]
    assert extra["run_queue"] == instance["run_queue"]


def test_organisation_names_become_kubernetes_names():
    org = organisations.Organisation(name="acme_eu", secrets={"GHL_TOKEN": "ACME_EU_GHL_TOKEN"})
    deployment = deployments(generated((org,)))["acme-eu"]
    assert deployment["env"]["WORKFORCE_ORG"] == "acme_eu"
    assert deployment["envSecrets"] == [{"name": "workforce-sync-acme-eu"}]
