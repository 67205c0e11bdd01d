"""The agent mapping file: every problem named by its line, nothing half-loaded."""

import dagster as dg
import pytest
import sqlalchemy as sa
from conftest import halo_resources
from helpers import failure_message

from resources.warehouse import engine_for
from sync_assets.halo import agent_mappings, halo_agents, mappings_match_agents

HEADER = "halo_agent_id,employee_number,xero_user_id,note\n"


def load(emulator, warehouse_url, tmp_path, text) -> dg.ExecuteInProcessResult:
    path = tmp_path / "agent_mappings.csv"
    path.write_text(text)
    return dg.materialize([halo_agents, agent_mappings, mappings_match_agents], raise_on_error=False,
                          resources=halo_resources(emulator, warehouse_url, mappings_file=str(path)))


def stored_mappings(url) -> dict[int, str]:
    with engine_for(url).connect() as conn:
        return dict(conn.execute(sa.text("SELECT halo_agent_id, employee_number FROM agent_mappings")).all())


def test_the_shipped_mapping_file_loads_and_matches_the_local_agents(emulator, sqlite_warehouse_url):
    result = dg.materialize([halo_agents, agent_mappings, mappings_match_agents],
                            resources=halo_resources(emulator, sqlite_warehouse_url))

    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    assert len(stored_mappings(sqlite_warehouse_url)) == 22


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("1,E1,,\n2,E2,,\n1,E3,,\n", "line 4: halo_agent_id 1 is already mapped on line 2"),
        ("1,E1,,\n2,E1,,\n", "line 3: employee_number E1 is already mapped on line 2"),
        ("1,E1,x-1,\n2,E2,x-1,\n", "line 3: xero_user_id x-1 is already mapped on line 2"),
        ("1,E1,,\nseven,E2,,\n", "line 3: halo_agent_id 'seven' is not a whole number"),
        ("1,,,\n", "line 2: agent 1 maps to neither an employee_number nor a xero_user_id"),
    ],
    ids=["duplicate agent", "duplicate employee", "duplicate xero user", "not a number", "maps to nothing"],
)
def test_a_bad_line_rejects_the_file_naming_the_line_and_keeps_the_last_good_mappings(emulator, sqlite_warehouse_url, tmp_path, lines, problem):
    assert load(emulator, sqlite_warehouse_url, tmp_path, HEADER + "1,E1,,\n").success

    result = load(emulator, sqlite_warehouse_url, tmp_path, HEADER + lines)

    assert not result.success
    assert problem in failure_message(result)
    assert stored_mappings(sqlite_warehouse_url) == {1: "E1"}


def test_a_wrong_header_is_named(emulator, sqlite_warehouse_url, tmp_path):
    result = load(emulator, sqlite_warehouse_url, tmp_path, "agent,employee\n1,E1\n")

    assert "line 1: the header must name halo_agent_id, employee_number, xero_user_id, note" in failure_message(result)


def test_mappings_to_unknown_or_disabled_agents_fail_the_check_naming_them(emulator, sqlite_warehouse_url, tmp_path):
    result = load(emulator, sqlite_warehouse_url, tmp_path, HEADER + "1,E1,,\n99,E99,,\n24,E24,,\n")

    assert result.success  # the good mappings are usable...
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "mappings_match_agents"]
    assert not check.passed  # ...and the check says what is wrong
    details = check.metadata["details"].value
    assert "line 3: agent 99 is not in Halo" in details
    assert "line 4: agent 24 (" in details and "is disabled" in details
