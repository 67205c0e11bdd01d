"""The conventions every asset of the code location keeps, checked over every asset spec as Dagster
loads them (`definitions.defs()`), so that a new asset, or a new provider's, cannot leave one out:
its group is its provider, its kinds name the providers it calls, it has a description, a table it
writes is named in `dagster/table_name`, a provider's budget is guarded by the provider's pool, its
health light follows its cadence tag, and a sync keeps books (`nothing_lost`).

Each failure names the asset and the convention it breaks."""

import dagster as dg
import pytest

from definitions import CADENCE_TAG, HEALTH, defs as load_definitions
from providers import NAMES as PROVIDERS  # also their resource keys and pool names
from providers import PROVIDERS as REGISTERED
from sync_assets.step import NOTHING_LOST

defs = load_definitions()

# The group of each asset module: its provider's, or operations for what runs around the syncs.
MODULE_GROUP = {**{p.module: p.name for p in REGISTERED}, "report": "operations", "doctor": "operations"}
# Documented exceptions, with where the README explains them.
NOT_A_SYNC = {"sync_report": "the daily report reads the run history and the warehouse and writes no table"}
NO_HEALTH_WINDOW = {
    "xero_time_entries": "runs when approvals come, not on a clock (README 'The health light')",
    "ghl_contacts_from_events": "runs when contact events come, not on a clock; ghl_contacts' light is the hourly sync's",
    **NOT_A_SYNC,
}

SPECS = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
ASSETS = sorted(SPECS)


def assets_def(name: str) -> dg.AssetsDefinition:
    return defs.resolve_assets_def(dg.AssetKey.from_user_string(name))


def providers_called(name: str) -> set[str]:
    """The providers an asset talks to: the provider resources it requires."""
    return set(assets_def(name).required_resource_keys) & set(PROVIDERS)


def test_the_code_location_has_the_assets_of_every_provider():
    assert {spec.group_name for spec in SPECS.values()} == {*PROVIDERS, "operations"}


@pytest.mark.parametrize("name", ASSETS)
def test_group_is_the_provider(name):
    module = assets_def(name).op.compute_fn.decorated_fn.__module__.rsplit(".", 1)[-1]
    expected = MODULE_GROUP.get(module)
    assert expected, f"{name}: defined in module {module!r}, which is no provider's (convention: group = provider)"
    assert SPECS[name].group_name == expected, f"{name}: group {SPECS[name].group_name!r}, not its provider {expected!r}"


@pytest.mark.parametrize("name", ASSETS)
def test_kinds_name_the_providers_called(name):
    kinds, called = SPECS[name].kinds, providers_called(name)
    assert kinds, f"{name}: no kinds (convention: every asset has kinds)"
    assert called <= kinds, f"{name}: calls {sorted(called)} but its kinds {sorted(kinds)} miss {sorted(called - kinds)}"


@pytest.mark.parametrize("name", ASSETS)
def test_has_a_description(name):
    assert (SPECS[name].description or "").strip(), f"{name}: no docstring (convention: every asset has a description)"


@pytest.mark.parametrize("name", ASSETS)
def test_a_table_it_writes_is_named(name):
    if name in NOT_A_SYNC or "warehouse" not in assets_def(name).required_resource_keys:
        return
    metadata = SPECS[name].metadata
    assert metadata.get("dagster/table_name"), f"{name}: writes the warehouse but has no dagster/table_name metadata"
    assert "dagster/column_schema" in metadata, f"{name}: names its table but not its columns (dagster/column_schema)"


@pytest.mark.parametrize("name", ASSETS)
def test_a_provider_call_is_in_the_providers_pool(name):
    pool, called, group = assets_def(name).op.pool, providers_called(name), SPECS[name].group_name
    if called:
        assert pool == group and group in called, (
            f"{name}: calls {sorted(called)} in pool {pool!r}, not its provider's pool {group!r} "
            "(convention: every provider call is in the provider's concurrency pool)")
    else:
        assert pool is None, f"{name}: calls no provider but waits in pool {pool!r}"


@pytest.mark.parametrize("name", ASSETS)
def test_cadence_tag_and_health_window_go_together(name):
    spec = SPECS[name]
    cadence, policy = spec.tags.get(CADENCE_TAG), spec.freshness_policy
    if name in NO_HEALTH_WINDOW:
        assert cadence is None and policy is None, f"{name}: {NO_HEALTH_WINDOW[name]}, yet has a cadence or a health window"
        return
    assert cadence in HEALTH, f"{name}: tag {CADENCE_TAG}={cadence!r}, not one of {sorted(HEALTH)}"
    assert policy == HEALTH[cadence], f"{name}: tag {CADENCE_TAG}={cadence} without the {cadence} freshness policy"


@pytest.mark.parametrize("name", ASSETS)
def test_every_sync_keeps_books(name):
    checks = {spec.name: spec for spec in assets_def(name).check_specs}
    if name in NOT_A_SYNC:
        assert NOTHING_LOST not in checks, f"{name}: {NOT_A_SYNC[name]}, yet declares {NOTHING_LOST}"
        return
    assert NOTHING_LOST in checks, f"{name}: a sync asset without the check {NOTHING_LOST} (sync_assets/step.py nothing_lost)"
    assert checks[NOTHING_LOST].blocking, f"{name}: its check {NOTHING_LOST} is not blocking"


@pytest.mark.parametrize("name", ASSETS)
def test_no_step_retry_policy_of_its_own(name):
    # Decision (README "Bad records, failures and retries"): the client retries each request and
    # run retries retry a run where a job asks for it; a step retry policy would multiply both.
    policy = assets_def(name).op.retry_policy
    assert policy is None, f"{name}: has a step retry policy {policy} (convention: retries are the client's and the run's)"
