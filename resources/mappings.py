"""Mapping files: data a non-developer edits in a spreadsheet, validated before anything uses it.

`config/agent_mappings.csv` (or `AGENT_MAPPINGS_FILE`) says which Halo agent is which person:

    halo_agent_id,employee_number,xero_user_id,note
    7,E1007,3f0c...,Sam Smit

One line per agent; `employee_number` (Employes) or `xero_user_id` may be empty while a person
is not in that system yet, but not both. Blank lines are ignored.

`config/xero_projects.csv` (or `XERO_PROJECT_MAPPINGS_FILE`) says which Xero project and task a
Halo client's time goes to; a line may narrow it to one contract or one ticket:

    halo_client_id,halo_contract_id,halo_ticket_id,xero_project_id,xero_task_id,note
    12,,,0b6c...,9d2e...,Acme: all support
    12,5012,,0b6c...,41aa...,Acme: the managed-services contract

An entry goes to the most specific line that matches it: its ticket, else its contract, else
its client.
"""

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from resources.settings import PROJECT_ROOT

AGENT_COLUMNS = ("halo_agent_id", "employee_number", "xero_user_id", "note")


@dataclass(frozen=True)
class AgentMapping:
    halo_agent_id: int
    employee_number: str | None
    xero_user_id: str | None
    note: str | None
    line: int


def _lines(reader: csv.DictReader) -> Iterator[tuple[int, dict[str, str]]]:
    """Each non-blank line of a mapping file after its header: (line number, stripped values)."""
    for line, raw in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in raw.items() if k}
        if any(values.values()):
            yield line, values


def read_agent_mappings(path: Path) -> tuple[list[AgentMapping], list[str]]:
    """The mappings, and every problem found, each naming its line. Problems mean: use none."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        return [], [f"cannot read the file ({error.strerror})"]
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in AGENT_COLUMNS[:3] if c not in (reader.fieldnames or [])]
    if missing:
        return [], [f"line 1: the header must name {', '.join(AGENT_COLUMNS)}; missing {', '.join(missing)}"]
    mappings: list[AgentMapping] = []
    problems: list[str] = []
    first_line: dict[tuple[str, str], int] = {}
    for line, values in _lines(reader):
        try:
            agent_id = int(values["halo_agent_id"])
        except ValueError:
            problems.append(f"line {line}: halo_agent_id {values['halo_agent_id']!r} is not a whole number")
            continue
        if not values["employee_number"] and not values["xero_user_id"]:
            problems.append(f"line {line}: agent {agent_id} maps to neither an employee_number nor a xero_user_id")
        for column in ("halo_agent_id", "employee_number", "xero_user_id"):
            value = str(agent_id) if column == "halo_agent_id" else values[column]
            if value and (column, value) in first_line:
                problems.append(f"line {line}: {column} {value} is already mapped on line {first_line[(column, value)]}")
            first_line.setdefault((column, value), line)
        mappings.append(AgentMapping(agent_id, values["employee_number"] or None, values["xero_user_id"] or None,
                                     values.get("note") or None, line))
    return mappings, problems


PROJECT_COLUMNS = ("halo_client_id", "halo_contract_id", "halo_ticket_id", "xero_project_id", "xero_task_id", "note")


@dataclass(frozen=True)
class ProjectMapping:
    xero_project_id: str
    xero_task_id: str
    line: int


class ProjectMappings:
    """Halo (client, contract, ticket) -> Xero project and task, most specific line first."""

    def __init__(self, lines: dict[tuple[int, int | None, int | None], ProjectMapping]):
        self.lines = lines

    def find(self, client_id: int | None, contract_id: int | None, ticket_id: int | None) -> ProjectMapping | None:
        candidates = [(client_id, None, ticket_id)] if ticket_id is not None else []
        candidates += [(client_id, contract_id, None)] if contract_id is not None else []
        for key in [*candidates, (client_id, None, None)]:
            if key in self.lines:
                return self.lines[key]
        return None

    def project_ids(self) -> set[str]:
        return {m.xero_project_id for m in self.lines.values()}


def _optional_int(values: dict[str, str], column: str) -> int | None:
    return int(values[column]) if values.get(column) else None


def read_project_mappings(path: Path) -> tuple[ProjectMappings, list[str]]:
    """The mappings, and every problem found, each naming its line. Problems mean: use none."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        return ProjectMappings({}), [f"cannot read the file ({error.strerror})"]
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in PROJECT_COLUMNS[:5] if c not in (reader.fieldnames or [])]
    if missing:
        return ProjectMappings({}), [f"line 1: the header must name {', '.join(PROJECT_COLUMNS)}; missing {', '.join(missing)}"]
    lines: dict[tuple[int, int | None, int | None], ProjectMapping] = {}
    problems: list[str] = []
    for line, values in _lines(reader):
        try:
            key = (int(values["halo_client_id"]), _optional_int(values, "halo_contract_id"), _optional_int(values, "halo_ticket_id"))
        except ValueError:
            problems.append(f"line {line}: halo_client_id, halo_contract_id and halo_ticket_id must be whole numbers (the last two may be empty)")
            continue
        if key[1] is not None and key[2] is not None:
            problems.append(f"line {line}: give a contract or a ticket, not both")
        if not values["xero_project_id"] or not values["xero_task_id"]:
            problems.append(f"line {line}: xero_project_id and xero_task_id are both needed")
        if key in lines:
            problems.append(f"line {line}: the same client/contract/ticket is already mapped on line {lines[key].line}")
            continue
        lines[key] = ProjectMapping(values["xero_project_id"], values["xero_task_id"], line)
    return ProjectMappings(lines), problems


class MappingFilesResource(dg.ConfigurableResource):
    """Where the mapping files are; relative paths are taken from the project folder."""

    agent_mappings_file: str
    project_mappings_file: str = "config/xero_projects.csv"

    def agent_mappings_path(self) -> Path:
        return self._path(self.agent_mappings_file)

    def project_mappings_path(self) -> Path:
        return self._path(self.project_mappings_file)

    @staticmethod
    def _path(name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else PROJECT_ROOT / path
