"""api_keys (hashed API keys with roles); items.image_trusted / image_root (whose fetch policy an
item's image follows), claim_source (the image source a claim started from: compared when writing),
fields_pending (a metadata change not yet copied to the vector store)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_keys_key_id")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        # rows of earlier versions came from feeds or from API calls that were already refused local
        # paths: treating them as trusted keeps them ingestible as they were
        batch_op.add_column(
            sa.Column("image_trusted", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("image_root", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("claim_source", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("fields_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(batch_op.f("ix_items_fields_pending"), ["fields_pending"])


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_items_fields_pending"))
        batch_op.drop_column("fields_pending")
        batch_op.drop_column("claim_source")
        batch_op.drop_column("image_root")
        batch_op.drop_column("image_trusted")
    op.drop_table("api_keys")
