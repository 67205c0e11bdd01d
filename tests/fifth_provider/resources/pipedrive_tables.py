"""Pipedrive's tables in the warehouse."""

import sqlalchemy as sa

from resources.tables import TABLES, synced_columns

pipedrive_persons = sa.Table(
    "pipedrive_persons",
    TABLES,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.Text),
    *synced_columns(),
)

tables = (pipedrive_persons,)
