"""GoHighLevel's table in the warehouse: the contacts."""

import sqlalchemy as sa

from resources.tables import TABLES, RawJSON

# The typed columns are the fields of the search answer's Contact (GoHighLevel's published
# SearchContactSuccessResponseDto); `raw` keeps the whole record, so a field mapped later needs
# no re-sync. Warehouses made before `raw` existed keep their old columns (name, address1,
# timezone, website: fields of GET /contacts/{id}, which search does not send); nothing writes them.
ghl_contacts = sa.Table(
    "ghl_contacts",
    TABLES,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("location_id", sa.String(64)),
    sa.Column("first_name", sa.Text),
    sa.Column("last_name", sa.Text),
    sa.Column("email", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("phone_label", sa.Text),
    sa.Column("company_name", sa.Text),
    sa.Column("business_name", sa.Text),
    sa.Column("business_id", sa.Text),
    sa.Column("dnd", sa.Boolean),
    sa.Column("dnd_settings", sa.Text, comment="JSON object, per channel"),
    sa.Column("type", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("assigned_to", sa.Text),
    sa.Column("address", sa.Text),
    sa.Column("city", sa.Text),
    sa.Column("state", sa.Text),
    sa.Column("country", sa.Text),
    sa.Column("postal_code", sa.Text),
    sa.Column("date_of_birth", sa.Text),
    sa.Column("valid_email", sa.Boolean),
    sa.Column("additional_emails", sa.Text, comment="JSON array"),
    sa.Column("additional_phones", sa.Text, comment="JSON array"),
    sa.Column("followers", sa.Text, comment="JSON array of user ids"),
    sa.Column("tags", sa.Text, comment="JSON array"),
    sa.Column("custom_fields", sa.Text, comment="JSON array of {id, value}"),
    sa.Column("date_added", sa.DateTime),
    sa.Column("date_updated", sa.DateTime, nullable=False),
    sa.Column("raw", RawJSON, comment="the contact exactly as GoHighLevel sent it"),
    sa.Column("content_hash", sa.String(32), nullable=False, comment="of the whole record (raw) but its searchAfter"),
    sa.Column("synced_at", sa.DateTime, nullable=False, comment="when this version was written"),
    sa.Column("seen_at", sa.DateTime, comment="last full reconciliation that saw the contact"),
    sa.Column("deleted_at", sa.DateTime, comment="set when a reconciliation no longer finds the contact"),
    sa.Index("ix_ghl_contacts_date_updated", "date_updated"),
)

tables = (ghl_contacts,)
