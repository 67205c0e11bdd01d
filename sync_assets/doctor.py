"""The `provider_doctor` job: `workforce-sync doctor` from the UI (Launchpad, no config).

It materializes nothing; its findings are in the run's log (one line each) and in the step's
output metadata (a table, and the counts), and the run fails when any check failed."""

import dagster as dg

from providers import doctor_checks, enabled
from resources.doctor import FAIL, exit_code, run_doctor, summary
from resources.settings import sync_env

PROVIDER_RESOURCES = (*(p.name for p in enabled()), "mapping_files", "warehouse")


@dg.op(required_resource_keys=set(PROVIDER_RESOURCES), tags={"kind": "doctor"})
def check_providers(context: dg.OpExecutionContext) -> dg.Output[int]:
    """Read-only checks of every assumption the syncs make about each provider."""
    resources = {name: getattr(context.resources, name) for name in PROVIDER_RESOURCES}
    findings = run_doctor(doctor_checks(), resources, production=sync_env() == "production")
    for finding in findings:
        (context.log.error if finding.severity == FAIL else context.log.info)(finding.line())
    table = ["| result | provider | check | seen | what to do |", "|---|---|---|---|---|"]
    table += [f"| {f.severity} | {f.provider} | {f.check} | {f.seen} | {f.action if f.severity != 'PASS' else ''} |".replace("\n", " ")
              for f in findings]
    metadata = {"findings": dg.MetadataValue.md("\n".join(table)), "summary": summary(findings),
                **{s.lower(): sum(f.severity == s for f in findings) for s in ("PASS", "WARN", "FAIL")}}
    if exit_code(findings):
        raise dg.Failure(description=f"doctor: {summary(findings)}", metadata=metadata, allow_retries=False)
    return dg.Output(0, metadata=metadata)


@dg.job(tags={"sync/trigger": "doctor"})
def provider_doctor():
    """Check every provider before the first sync writes anything, and whenever an operator asks."""
    check_providers()


jobs = [provider_doctor]
