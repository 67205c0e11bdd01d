"""A guard against tests that pass only on the day they were written.

CI went red on 2026-11-24 because a test approved fixed dates (2026-11-16..19) while the approval
sensor, in a real daemon, counted its open period back from the machine's today. The rules, per
test function, following within its module the helpers it calls, the module's fixtures it takes
and the module-level constants it reads (conftest's ANCHOR counts as a literal date):

1. A test that starts a process (subprocess, a deployment, a CLI) must not use a literal calendar
   date: the process runs on the real clock, which no test can freeze. Derive the dates from the
   real today and anchor the emulator there (tests/test_deployment.py).
2. A test that uses a literal calendar date in-process must freeze Dagster's clock (`freeze_time`)
   or hand the code its time (`scheduled_execution_time=`), so that what the code takes for now
   agrees with the date.

A literal date is `date(2026, ...)`/`datetime(2026, ...)`, a string with `2026-11-20`, or a name
bound to one. Where a date is only data to code that reads no clock, list the test (or module)
below with the reason: the exception is then written down and reviewed, not forgotten.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
LITERAL_DATE = re.compile(r"\b(19|20)\d\d-[01]\d-[0-3]\d|\b(date|datetime)\((19|20)\d\d,")
LITERAL_DATE_NAMES = {"ANCHOR"}  # conftest's fixed emulator anchor
SPAWNS = {"subprocess.run", "subprocess.Popen", "subprocess.check_call", "subprocess.check_output", "Popen", "os.fork"}
FREEZES = {"freeze_time", "step_health"}  # step_health (health_daemon.py) freezes around the daemon
FROZEN_FIXTURE = "frozen_clock"  # conftest: Dagster's clock frozen at conftest.NOW
EXPLICIT_CLOCK_KEYWORDS = {"scheduled_execution_time"}

# Modules whose dates are data to code that reads no clock.
CLOCKLESS_MODULES = {
    "test_fiscal_years.py": "fiscal-year arithmetic on given dates",
    "test_parsers_properties.py": "parsers of provider records",
    "test_xero_emulator.py": "the emulator's Xero API on given dates (its day limit is checked against the same real clock)",
    "test_any_day.py": "its dates are the hard instants, and every test there freezes the clock at them",
    "test_guard_dates.py": "this guard's own samples",
    "test_alerts.py": "its partition keys only label runs of a test asset that fails at once (its health test freezes the clock)",
}
# Single tests, as "module::test".
CLOCKLESS_TESTS = {
    "test_halo_identity.py::test_keys_made_by_the_code_before_are_rekeyed_without_a_duplicate_or_an_orphan_in_xero":
        "the child runs the code before on given dates: a year's range from run config and pushes of named work dates, no clock read",
    "test_halo_rate_limit.py::test_two_processes_on_one_warehouse_together_stay_within_the_window":
        "the child only sends requests to the emulator; the dates are the emulator's data, read by no clock",
    "test_xero_push.py::test_two_runs_of_one_day_at_once_push_each_entry_once":
        "two child processes push a past work date; the push reads no clock (its partitions reach up to today)",
}


@dataclass
class Facts:
    """What one function (or class, or fixture) does directly."""

    dates: list[str] = field(default_factory=list)
    spawns: list[str] = field(default_factory=list)
    freezes: bool = False
    calls: set[str] = field(default_factory=set)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _facts(node: ast.AST, date_names: set[str], local_names: set[str]) -> Facts:
    facts = Facts()
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str) and LITERAL_DATE.search(child.value):
            facts.dates.append(LITERAL_DATE.search(child.value).group(0))
        elif isinstance(child, ast.Name) and child.id in date_names:
            facts.dates.append(child.id)
        elif isinstance(child, ast.Call):
            name = _dotted(child.func)
            first = child.args[0] if child.args else None
            if name.split(".")[-1] in ("date", "datetime") and isinstance(first, ast.Constant) and isinstance(first.value, int) \
                    and 1900 <= first.value < 2100:
                facts.dates.append(ast.unparse(child))
            if name in SPAWNS:
                facts.spawns.append(name)
            if name.split(".")[-1] in FREEZES or any(k.arg in EXPLICIT_CLOCK_KEYWORDS for k in child.keywords):
                facts.freezes = True
        if isinstance(child, ast.Name) and child.id in local_names:  # called, or handed on (a process's target)
            facts.calls.add(child.id)
    if isinstance(node, ast.FunctionDef):  # fixtures the function takes
        facts.calls |= {a.arg for a in node.args.args if a.arg in local_names}
        facts.freezes = facts.freezes or FROZEN_FIXTURE in {a.arg for a in node.args.args}
    return facts


def _module_freezes(tree: ast.Module) -> bool:
    """`pytestmark = pytest.mark.usefixtures("frozen_clock")`: every test of the module runs frozen."""
    return any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
               and FROZEN_FIXTURE in ast.unparse(n.value) for n in tree.body)


def _module_date_names(tree: ast.Module) -> set[str]:
    """Module-level names bound to a literal date, or to an expression over such names (to a fixpoint)."""
    names = set(LITERAL_DATE_NAMES)
    assignments = [n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))]
    changed = True
    while changed:
        changed = False
        for node in assignments:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if bound - names and node.value is not None and _facts(node.value, names, set()).dates:
                names |= bound
                changed = True
    return names


def violations(source: str, module: str = "sample.py") -> list[str]:
    """The rule breaches of one test module's source, as readable lines."""
    tree = ast.parse(source)
    date_names = _module_date_names(tree)
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    facts = {name: _facts(node, date_names, set(defs)) for name, node in defs.items()}

    def closure(name: str) -> tuple[list[str], list[str], bool]:
        seen, todo, dates, spawns, frozen = set(), [name], [], [], False
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            f = facts[current]
            dates += f.dates
            spawns += f.spawns
            frozen = frozen or f.freezes
            todo += sorted(f.calls)
        return dates, spawns, frozen

    found = []
    module_frozen = _module_freezes(tree)
    if module in CLOCKLESS_MODULES:
        return found
    for name, node in defs.items():
        if not (isinstance(node, ast.FunctionDef) and name.startswith("test_")) or f"{module}::{name}" in CLOCKLESS_TESTS:
            continue
        dates, spawns, frozen = closure(name)
        frozen = frozen or module_frozen
        if dates and spawns:
            found.append(f"{module}::{name}: literal date {dates[0]} in a test that starts a process ({spawns[0]}), "
                         "which runs on the real clock: derive the date from the real today")
        elif dates and not frozen:
            found.append(f"{module}::{name}: literal date {dates[0]} without a frozen clock: "
                         "use freeze_time (or scheduled_execution_time=) at a moment derived from the same anchor")
    return found


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_no_test_depends_on_the_day_it_runs(path):
    assert violations(path.read_text(), path.name) == []


# What broke CI, in small: fixed work dates approved while a real deployment's sensor counts its
# open period back from the real today.
THE_BUG = """
APPROVED_DAY = date(2026, 11, 19)

@pytest.fixture
def deployment(tmp_path):
    deployment = Deployment(tmp_path)
    yield deployment

class Deployment:
    def __init__(self, tmp):
        self.process = subprocess.Popen(["deploy/start"])

def test_the_approval_sensor_fires(deployment):
    deployment.emulator.halo.approve(3, APPROVED_DAY)
"""
IN_PROCESS_UNFROZEN = """
DAY = "2026-11-18"

def push(resources, day=DAY):
    return dg.materialize([xero_time_entries], resources=resources, partition_key=day)

def test_push(resources):
    assert push(resources).success
"""
IN_PROCESS_FROZEN = IN_PROCESS_UNFROZEN.replace("    return dg.materialize", "    with freeze_time(ANCHOR):\n        return dg.materialize")
DERIVED = """
def test_the_approval_sensor_fires(deployment):
    deployment.emulator.halo.approve(3, deployment.days.approved)
    subprocess.run(["true"])
"""


def test_the_guard_catches_the_bug_that_broke_ci():
    (found,) = violations(THE_BUG)
    assert "test_the_approval_sensor_fires" in found and "starts a process (subprocess.Popen)" in found


def test_the_guard_asks_an_in_process_test_with_a_fixed_date_to_freeze_the_clock():
    (found,) = violations(IN_PROCESS_UNFROZEN)
    assert "test_push: literal date" in found and "freeze_time" in found
    assert violations(IN_PROCESS_FROZEN) == []
    assert violations(DERIVED) == []
