"""What the benchmark scripts share: a fresh PostgreSQL database per run, and quiet Dagster logs."""

import contextlib
import os
import secrets
from collections.abc import Iterator

import sqlalchemy as sa

import providers  # noqa: F401  (the registry: every provider's tables join the warehouse's)
from resources.warehouse import engine_for

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
# Run config that keeps Dagster's console to warnings: per-page log lines would be measured too.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A database of its own on the machine's PostgreSQL, dropped afterwards."""
    name = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
