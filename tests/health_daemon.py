"""Stepping the health light in tests: the freshness daemon evaluated at a chosen moment.

Dagster's private test helpers (`freeze_time`, the daemon workspace context, the daemon itself)
for the alert and status tests, kept to this one module."""

from contextlib import contextmanager
from datetime import datetime, timedelta

import dagster as dg
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.freshness import FreshnessDaemon

from resources.settings import PROJECT_ROOT

__all__ = ["daemon_workspace", "freeze_time", "move_frozen_clock", "step_health"]


def move_frozen_clock(seconds: float) -> None:
    """Move the clock `freeze_time` holds on by `seconds`, from any thread (an emulator observer
    moves it in the middle of a run, so that the run lasts a known time on the clock)."""
    import dagster._time as dagster_time

    moved = dagster_time._mockable_get_current_datetime.return_value + timedelta(seconds=seconds)
    dagster_time._mockable_get_current_datetime.return_value = moved
    dagster_time._mockable_get_current_timestamp.return_value = moved.timestamp()


@contextmanager
def daemon_workspace(instance: dg.DagsterInstance):
    """The code location as `dagster dev` loads it (`definitions`), for the freshness daemon."""
    target = ModuleTarget(module_name="definitions", attribute=None, working_directory=str(PROJECT_ROOT),
                          location_name="workforce_sync")
    with create_test_daemon_workspace_context(target, instance) as context:
        yield context


def step_health(workspace, moment: datetime) -> None:
    """One freshness daemon iteration as if it were `moment`: records PASS / WARN / FAIL."""
    with freeze_time(moment):
        list(FreshnessDaemon().run_iteration(workspace))
