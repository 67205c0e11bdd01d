"""`workforce-sync doctor` against the emulator: every check passes against its ideal providers;
against its realistic default each HaloPSA quirk is a WARN saying what the sync does instead,
and the exit code stays 0; each fault switched on alone is named by exactly its check, with the
right severity and exit code. Read-only: the doctor never writes to a provider."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from conftest import ANCHOR, employes_resources, ghl_resources, xero_resources
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time
from helpers import AGENT, DAY, halo_day, load_mappings, meta, push

from emulator import Emulator
from providers import NAMES, doctor_checks
from resources.doctor import FAIL, PASS, WARN, exit_code, push_gate, run_doctor
from resources.mappings import MappingFilesResource
from resources.settings import PROJECT_ROOT
from sync_assets.doctor import provider_doctor

WRITES = ("POST", "PUT", "PATCH", "DELETE")




def doctor_resources(emulator: Emulator, warehouse_url: str, **files) -> dict:
    return {
        **ghl_resources(emulator, warehouse_url),
        **employes_resources(emulator, warehouse_url),
        **xero_resources(emulator, warehouse_url, Fernet.generate_key().decode()),
        "mapping_files": MappingFilesResource(agent_mappings_file="config/agent_mappings.csv", **files),
    }


def examine(emulator: Emulator, warehouse_url: str, *, production: bool = False, **files) -> list:
    with freeze_time(ANCHOR):
        return run_doctor(doctor_checks(), doctor_resources(emulator, warehouse_url, **files), production=production)


def not_passed(findings) -> dict[tuple[str, str], str]:
    return {(f.provider, f.check): f.severity for f in findings if f.severity != PASS}


def writes(emulator: Emulator) -> list:
    """Requests that would change a provider's data (token exchanges are how every call starts)."""
    return [s for s in emulator.requests() if s.method in WRITES and not s.path.endswith("/token")
            and s.path != "/contacts/search"]


def test_every_check_passes_against_the_ideal_providers_and_nothing_is_written(ideal_emulator, sqlite_warehouse_url):
    emulator = ideal_emulator
    findings = examine(emulator, sqlite_warehouse_url)
    assert not_passed(findings) == {}
    checks = {(f.provider, f.check) for f in findings}
    for expected in [("gohighlevel", "search_paging"), ("gohighlevel", "search_fields"), ("halopsa", "entry_identity"),
                     ("halopsa", "day_filter"), ("halopsa", "agent_filter"), ("halopsa", "approval_status"),
                     ("employes", "list_envelope"), ("employes", "employments"), ("xero", "tenant"),
                     ("xero", "refresh_token"), ("xero", "mappings_exist"), ("xero", "day_budget")]:
        assert expected in checks
    assert exit_code(findings) == 0
    assert writes(emulator) == []
    assert len(emulator.requests()) < 60  # a handful per provider, far inside every limit


def test_a_real_tenants_quirks_are_warnings_naming_what_the_sync_does_instead(emulator, sqlite_warehouse_url):
    findings = examine(emulator, sqlite_warehouse_url)
    assert not_passed(findings) == {("halopsa", "date_only_filter"): WARN, ("halopsa", "agent_filter"): WARN}
    said = {f.check: f"{f.seen} -> {f.action}" for f in findings if f.provider == "halopsa"}
    assert "with id 0" in said["entry_identity"] and "by ticket" in said["entry_identity"] and "by fingerprint" in said["entry_identity"]
    assert "sent as ticket_id 0 / action_number 0" in said["entry_identity"] and "every key is the entry's own" in said["entry_identity"]
    assert " break" in said["time_kinds"] and " leave" in said["time_kinds"] and "never pushed to Xero" in said["time_kinds"]
    assert "the sync always sends date-times" in said["date_only_filter"]
    assert "/api/Timesheet answered" in said["agent_filter"] and "/api/TimesheetEvent" not in said["agent_filter"]
    assert exit_code(findings) == 0


def test_a_time_entry_list_that_ignores_the_agent_filter_is_named(ideal_emulator, sqlite_warehouse_url):
    ideal_emulator.halo.entry_agent_filter = False
    findings = examine(ideal_emulator, sqlite_warehouse_url)
    assert not_passed(findings) == {("halopsa", "agent_filter"): WARN}
    assert "/api/TimesheetEvent answered" in next(f.seen for f in findings if f.check == "agent_filter")


def test_an_unknown_approval_status_is_named_with_the_setting_to_check(ideal_emulator, sqlite_warehouse_url):
    sheet_agent, sheet_day = next(iter(ideal_emulator.halo.timesheets()))
    day = max(d for a, d in ideal_emulator.halo.timesheets() if a == sheet_agent)
    ideal_emulator.halo.set_approval(sheet_agent, day, approvalstatus=7)
    findings = examine(ideal_emulator, sqlite_warehouse_url)
    assert not_passed(findings) == {("halopsa", "approval_status"): WARN}
    finding = next(f for f in findings if f.check == "approval_status")
    assert "unknown values [7]" in finding.seen and "HALO_APPROVED_STATUSES" in finding.action


def test_a_xero_task_missing_from_xero_fails_naming_the_mapping_line(ideal_emulator, sqlite_warehouse_url, tmp_path):
    emulator = ideal_emulator
    original = (PROJECT_ROOT / "config/xero_projects.csv").read_text().splitlines()
    project = original[1].split(",")[3]
    broken = tmp_path / "xero_projects.csv"
    broken.write_text("\n".join([original[0], f"1,,,{project},00000000-0000-0000-0000-00000000dead,gone"]) + "\n")
    findings = examine(emulator, sqlite_warehouse_url, project_mappings_file=str(broken))
    assert not_passed(findings) == {("xero", "mappings_exist"): FAIL}
    (finding,) = [f for f in findings if f.check == "mappings_exist"]
    assert "line 2: task 00000000-0000-0000-0000-00000000dead is not a task" in finding.seen
    assert exit_code(findings) == 1


def test_a_revoked_refresh_token_fails_with_how_to_reconnect(ideal_emulator, sqlite_warehouse_url):
    emulator = ideal_emulator
    emulator.xero.revoke_refresh_tokens()
    findings = examine(emulator, sqlite_warehouse_url)
    assert not_passed(findings) == {("xero", "refresh_token"): FAIL}
    (finding,) = [f for f in findings if f.check == "refresh_token"]
    assert "xero-connect" in finding.action
    assert exit_code(findings) == 1


def test_the_emulator_as_a_production_base_url_fails_for_every_provider(ideal_emulator, sqlite_warehouse_url):
    emulator = ideal_emulator
    findings = examine(emulator, sqlite_warehouse_url, production=True)
    assert not_passed(findings) == {(p, "base_url"): FAIL for p in NAMES}


def test_a_base_url_that_is_not_the_provider_fails_as_unreachable(ideal_emulator, sqlite_warehouse_url):
    emulator = ideal_emulator
    resources = doctor_resources(emulator, sqlite_warehouse_url)
    resources["employes"] = employes_resources(emulator, sqlite_warehouse_url)["employes"].model_copy(
        update={"base_url": emulator.url + "/v9"})
    with freeze_time(ANCHOR):
        findings = run_doctor(doctor_checks(("employes",)), resources, production=False)
    assert not_passed(findings) == {("employes", "company"): FAIL}


def test_missing_rate_limit_headers_are_a_warning_where_they_are_documented(sqlite_warehouse_url):
    emulator = Emulator(seed=7, anchor=ANCHOR, contacts=50, agents=4, employees=5, rate_limits=False, halo_ideal=True)
    emulator.start()
    try:
        findings = examine(emulator, sqlite_warehouse_url)
    finally:
        emulator.stop()
    assert not_passed(findings) == {("gohighlevel", "rate_limit_headers"): WARN, ("gohighlevel", "day_budget"): WARN,
                                    ("xero", "rate_limit_headers"): WARN, ("xero", "day_budget"): WARN}
    assert exit_code(findings) == 0


def test_xeros_day_budget_is_what_its_header_says_and_a_low_remainder_warns(ideal_emulator, sqlite_warehouse_url):
    resources = doctor_resources(ideal_emulator, sqlite_warehouse_url)

    def day_budget():
        with freeze_time(ANCHOR):
            findings = run_doctor(doctor_checks(("xero",)), resources, production=False)
        return next(f for f in findings if f.check == "day_budget")

    fresh = day_budget()  # the emulator's day is the Starter tier's 1,000: no 5,000 to divide by
    left = ideal_emulator.xero.per_day - ideal_emulator.xero.day_used
    assert (fresh.severity, fresh.seen) == (PASS, f"{left} requests left today (X-DayLimit-Remaining)")
    ideal_emulator.xero.set_limits(per_day=ideal_emulator.xero.day_used + 200)
    low = day_budget()
    assert low.severity == WARN and "under 250" in low.seen


@pytest.mark.parametrize("skew_s, severity", [(90, WARN), (-900, FAIL)])
def test_a_skewed_clock_is_named_for_every_provider(sqlite_warehouse_url, skew_s, severity):
    emulator = Emulator(seed=7, anchor=ANCHOR, contacts=50, agents=4, employees=5, clock_skew_s=skew_s, halo_ideal=True)
    emulator.start()
    try:
        findings = examine(emulator, sqlite_warehouse_url)
    finally:
        emulator.stop()
    assert not_passed(findings) == {(p, "clock_skew"): severity for p in NAMES}
    assert exit_code(findings) == (severity == FAIL)


def test_the_provider_doctor_job_reports_in_the_ui_and_fails_on_a_failed_check(ideal_emulator, sqlite_warehouse_url):
    emulator = ideal_emulator
    defs = dg.Definitions(jobs=[provider_doctor], resources=doctor_resources(emulator, sqlite_warehouse_url))
    with freeze_time(ANCHOR):
        result = defs.resolve_job_def("provider_doctor").execute_in_process()
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert metadata["fail"] == 0 and metadata["pass"] > 20
    assert "| PASS | xero | tenant |" in metadata["findings"]

    emulator.xero.revoke_refresh_tokens()
    with freeze_time(ANCHOR):
        result = defs.resolve_job_def("provider_doctor").execute_in_process(raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "1 failed" in failure.step_failure_data.error.message


def test_a_production_push_waits_for_a_doctor_pass(emulator, sqlite_warehouse_url, monkeypatch):
    resources = doctor_resources(emulator, sqlite_warehouse_url)
    engine = resources["warehouse"].engine
    assert "doctor has not passed for halopsa and xero" in push_gate(engine)
    monkeypatch.setenv("XERO_PUSH_WITHOUT_DOCTOR", "true")
    assert push_gate(engine) is None
    monkeypatch.delenv("XERO_PUSH_WITHOUT_DOCTOR")
    emulator.xero.revoke_refresh_tokens()
    examine(emulator, sqlite_warehouse_url)
    assert push_gate(engine).startswith("the doctor has not passed for xero yet")


def test_the_command_prints_one_line_per_check_and_json_for_machines(tmp_path):
    # The command runs on the real clock: the emulator's data ends now, whatever the date.
    emulator = Emulator(seed=7, anchor=datetime.now(UTC), contacts=50, agents=4, employees=5, halo_ideal=True)
    emulator.start()
    try:
        check_command(emulator, tmp_path)
    finally:
        emulator.stop()


def check_command(emulator: Emulator, tmp_path: Path) -> None:
    env = {**os.environ, "SYNC_ENV": "local", "EMULATOR_URL": emulator.url, "WAREHOUSE_URL": f"sqlite:///{tmp_path / 'w.db'}",
           "DAGSTER_HOME": str(tmp_path / "home"), "XERO_TOKEN_KEY": Fernet.generate_key().decode()}
    command = [sys.executable, "-c", "import sys, cli; sys.exit(cli.main(sys.argv[1:]))", "doctor"]
    text = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[-1].endswith("0 failed")
    assert any(line.startswith("PASS  xero        tenant") for line in lines)
    emulator.xero.revoke_refresh_tokens()
    machine = subprocess.run([*command, "--json", "--provider", "xero"], env=env, cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=300)
    assert machine.returncode == 1, machine.stderr
    report = json.loads(machine.stdout)
    assert report["ok"] is False
    assert {f["provider"] for f in report["findings"]} == {"xero"}
    assert {"check": "refresh_token", "severity": "FAIL"}.items() <= next(
        f for f in report["findings"] if f["check"] == "refresh_token").items()


def test_a_production_push_stays_a_dry_run_until_the_doctor_passes(emulator, sqlite_warehouse_url, monkeypatch):
    resources = doctor_resources(emulator, sqlite_warehouse_url)
    monkeypatch.setenv("SYNC_ENV", "production")
    monkeypatch.setenv("XERO_PUSH_ENABLED", "true")
    emulator.halo.approve(AGENT, DAY)
    with freeze_time(ANCHOR), dg.instance_for_test() as instance:
        load_mappings(resources, instance)
        waiting = push(resources, instance)
        assert waiting.success and emulator.xero.entries() == {}
        assert meta(waiting, "xero_time_entries")["dry_run"] is True
        assert "doctor has not passed" in meta(waiting, "xero_time_entries")["dry_run_reason"]

        assert exit_code(run_doctor(doctor_checks(), resources, production=False)) == 0  # the emulator is no production URL
        pushed = push(resources, instance)
    assert meta(pushed, "xero_time_entries")["dry_run"] is False
    assert len(emulator.xero.entries()) == meta(pushed, "xero_time_entries")["created"] == len(halo_day(emulator))
