"""index_versions.models (the model set a version is built with) and activation_requested_at;
version_items (which item, from which image, each version holds: build progress and resumption);
serving_processes (which models each API process has loaded: the activation barrier)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("index_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("models", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("activation_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "version_items",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["index_versions.id"],
            name=op.f("fk_version_items_version_id_index_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_version_items_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("version_id", "item_id", name=op.f("pk_version_items")),
    )
    op.create_index(op.f("ix_version_items_item_id"), "version_items", ["item_id"])
    op.create_table(
        "serving_processes",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("signatures", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_processes")),
    )
    # what earlier versions hold: every item with crop rows in a base version, from its current image
    op.execute(
        """
        INSERT INTO version_items (version_id, item_id, content_hash, source, indexed_at)
        SELECT DISTINCT crops.index_version_id, crops.item_id, items.content_hash, items.image_url,
               COALESCE(items.indexed_at, items.updated_at)
        FROM crops JOIN items ON items.id = crops.item_id
        """
    )


def downgrade() -> None:
    op.drop_table("serving_processes")
    op.drop_index(op.f("ix_version_items_item_id"), table_name="version_items")
    op.drop_table("version_items")
    with op.batch_alter_table("index_versions", schema=None) as batch_op:
        batch_op.drop_column("activation_requested_at")
        batch_op.drop_column("models")
