"""Mapping files: data a non-developer edits in a spreadsheet, validated before anything uses it.

`config/agent_mappings.csv` (or `AGENT_MAPPINGS_FILE`) says which Halo agent is which person:

    halo_agent_id,employee_number,xero_user_id,note
    7,E1007,3f0c...,Sam Smit

One line per agent; `employee_number` (Employes) or `xero_user_id` may be empty while a person
is not in that system yet, but not both. Blank lines are ignored.
"""

import csv
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
    for line, raw in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in raw.items() if k}
        if not any(values.values()):
            continue
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


class MappingFilesResource(dg.ConfigurableResource):
    """Where the mapping files are; relative paths are taken from the project folder."""

    agent_mappings_file: str

    def agent_mappings_path(self) -> Path:
        path = Path(self.agent_mappings_file)
        return path if path.is_absolute() else PROJECT_ROOT / path
