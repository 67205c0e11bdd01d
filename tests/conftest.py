"""Fixtures shared by the tests: the provider emulator on a random port, warehouses on SQLite
and on a fresh PostgreSQL database of the machine's server, and resources bound to both."""

import atexit
import os
import secrets
import shutil
import tempfile
import warnings
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from dagster._core.test_utils import freeze_time
from openapi_contract import Contract, specs_missing

import providers  # noqa: F401  (the registry: every provider's tables join the warehouse's)
from emulator import Emulator
from emulator import employes as employes_emulator, halo as halo_emulator, xero as xero_emulator
from emulator.ghl import LOCATION_ID, TOKEN
from resources.employes import EmployesResource
from resources.ghl import GoHighLevelResource
from resources.halo import HaloPSAResource
from resources.mappings import MappingFilesResource
from resources.warehouse import WarehouseResource, engine_for
from resources.tables import TABLES
from resources.xero import XeroResource

# Nothing a test does may write into the project's own .local/ (a developer's local install lives
# there): the local definitions take the warehouse and the Xero token key from these instead of
# creating .local/warehouse.db and .local/xero_token.key. Set before any test module imports
# `definitions`, and inherited by the processes tests start.
_SCRATCH = tempfile.mkdtemp(prefix="workforce-sync-tests-")
os.environ["WAREHOUSE_URL"] = f"sqlite:///{_SCRATCH}/warehouse.db"
os.environ["XERO_TOKEN_KEY"] = Fernet.generate_key().decode()
# The partitions' history from a fixed day, not from the day the suite runs (a new installation's
# default): the tests sync hours and days of 2026 from 2026-01-01 on.
os.environ.setdefault("SYNC_HISTORY_START", "2026-01-01")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)

# The emulator's seeded data ends here; tests make their changes in the hours after it.
ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# Dagster's clock in the in-process tests that use ANCHOR's dates (fixture `frozen_clock`): the same
# day, after the hours the tests change (partitions 13:00 and 14:00 are complete).
NOW = ANCHOR + timedelta(hours=3)
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def frozen_clock():
    """Freezes Dagster's clock (what the syncs, sensors and checks take for now) at NOW, so that
    the fixed dates of the emulator's data agree with it on any day the suite runs. A module opts
    in with `pytestmark = pytest.mark.usefixtures("frozen_clock")`; tests/test_guard_dates.py
    asks for it where a test uses a fixed date."""
    with freeze_time(NOW):
        yield NOW


@pytest.fixture
def emulator(request):
    yield from serving(request, Emulator(seed=7, anchor=ANCHOR, contacts=300))


@pytest.fixture
def small_emulator(request):
    """Small data and no provider-side limits, for tests that make many runs (the rate limits
    have tests of their own)."""
    yield from serving(request, Emulator(seed=7, anchor=ANCHOR, contacts=300, agents=3, employees=10, rate_limits=False))


@pytest.fixture
def ideal_emulator():
    """Providers as documented, without a real tenant's quirks (the HaloPSA of the published API)."""
    emulator = Emulator(seed=7, anchor=ANCHOR, contacts=50, halo_ideal=True)
    emulator.start()
    yield emulator
    emulator.stop()


def serving(request, emulator: Emulator):
    """Serve `emulator` for one test. In tests marked `openapi`, every GoHighLevel and Xero
    exchange is checked against the providers' published descriptions at the end."""
    contract = None
    if request.node.get_closest_marker("openapi"):
        missing = specs_missing()
        if missing:
            warnings.warn(f"{missing}: this test's requests and answers were not checked against them", stacklevel=1)
        else:
            contract = Contract().watch(emulator)
    emulator.start()
    yield emulator
    emulator.stop()
    if contract is not None:
        violations = contract.violations()
        assert not violations, f"{len(violations)} exchanges break the published API descriptions:\n" + "\n".join(violations[:20])


@pytest.fixture
def emulator_at():
    """Starts a small emulator (as `small_emulator`) whose data ends at a moment of the test's
    choosing: for tests that move the clock, the anchor is derived from the frozen now."""
    started = []

    def start(anchor: datetime) -> Emulator:
        emulator = Emulator(seed=7, anchor=anchor, contacts=300, agents=3, employees=10, rate_limits=False)
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture(scope="session")
def postgres_url():
    """A database created for this test session and dropped after it."""
    name = f"workforce_sync_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is needed for the warehouse tests: {error.orig}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    engine_for(url).dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_warehouse_url(postgres_url):
    """The session's PostgreSQL warehouse, emptied before and after the test."""
    _empty(postgres_url)
    yield postgres_url
    _empty(postgres_url)


def _empty(url: str) -> None:
    with engine_for(url).begin() as conn:
        for table in reversed(TABLES.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path):
    """An empty warehouse, on each of the two databases the project supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return request.getfixturevalue("postgres_warehouse_url")


@pytest.fixture
def sqlite_warehouse_url(tmp_path):
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


def ghl_resources(emulator: Emulator, warehouse_url: str, **client_options) -> dict:
    """Resources as the local definitions build them, pointed at the test emulator. Small pages
    and short backoff, so paging and retries are exercised quickly."""
    options = {"page_size": 50, "backoff_initial_s": 0.01, **client_options}
    return {
        "gohighlevel": GoHighLevelResource(base_url=emulator.url, token=TOKEN, location_id=LOCATION_ID, **options),
        "warehouse": WarehouseResource(url=warehouse_url),
    }


def halo_resources(emulator: Emulator, warehouse_url: str, mappings_file: str = "config/agent_mappings.csv", **client_options) -> dict:
    """Resources as the local definitions build them, pointed at the test emulator."""
    options = {"client_id": halo_emulator.CLIENT_ID, "client_secret": halo_emulator.CLIENT_SECRET,
               "backoff_initial_s": 0.01, **client_options}
    return {
        "halopsa": HaloPSAResource(base_url=emulator.url, auth_url=f"{emulator.url}/auth", **options),
        "mapping_files": MappingFilesResource(agent_mappings_file=mappings_file),
        "warehouse": WarehouseResource(url=warehouse_url),
    }




def employes_resources(emulator: Emulator, warehouse_url: str, **client_options) -> dict:
    """Resources as the local definitions build them, pointed at the test emulator."""
    options = {"backoff_initial_s": 0.01, **client_options}
    return {
        "employes": EmployesResource(base_url=emulator.url, token=employes_emulator.TOKEN,
                                     company_id=employes_emulator.COMPANY_ID, **options),
        "warehouse": WarehouseResource(url=warehouse_url),
    }


def xero_resources(emulator: Emulator, warehouse_url: str, token_key: str, **client_options) -> dict:
    """Halo and Xero resources as the local definitions build them, pointed at the test emulator."""
    options = {"backoff_initial_s": 0.01, **client_options}
    return {
        **halo_resources(emulator, warehouse_url),
        "xero": XeroResource(api_url=emulator.url, identity_url=emulator.url, client_id=xero_emulator.CLIENT_ID,
                             client_secret=xero_emulator.CLIENT_SECRET, tenant_id=xero_emulator.TENANT_ID, token_key=token_key,
                             initial_refresh_token=xero_emulator.INITIAL_REFRESH_TOKEN, **options),
    }
