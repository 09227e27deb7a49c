"""items.claim_token (which task holds an item that is 'processing'); job embedding counters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.String(length=64), nullable=True))
    with op.batch_alter_table("ingest_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("embedded", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("unchanged", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ingest_jobs", schema=None) as batch_op:
        batch_op.drop_column("unchanged")
        batch_op.drop_column("embedded")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_column("claim_token")
