"""initial schema: items, crops, index_versions, ingest_jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-30 03:09:41.136571
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_name", sa.String(length=255), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("signature_description", sa.Text(), nullable=False),
        sa.Column("signature_spec", sa.JSON(), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("index_params", sa.JSON(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("building", "live", "retired", name="index_state", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("crop_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_versions")),
        sa.UniqueConstraint("collection_name", name=op.f("uq_index_versions_collection_name")),
    )
    with op.batch_alter_table("index_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_index_versions_signature"), ["signature"], unique=False)
        batch_op.create_index(
            "uq_index_versions_one_live",
            ["state"],
            unique=True,
            postgresql_where=sa.text("state = 'live'"),
            sqlite_where=sa.text("state = 'live'"),
        )

    op.create_table(
        "ingest_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_jobs")),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=128), nullable=False),
        sa.Column("title", sa.String(length=512), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("brand", sa.String(length=128), nullable=False),
        sa.Column("price", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("color", sa.String(length=64), nullable=True),
        sa.Column("sizes", sa.JSON(), nullable=False),
        sa.Column("in_stock", sa.Boolean(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending", "processing", "indexed", "failed", name="item_status", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["last_job_id"],
            ["ingest_jobs.id"],
            name=op.f("fk_items_last_job_id_ingest_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("sku", name=op.f("uq_items_sku")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_items_brand"), ["brand"], unique=False)
        batch_op.create_index(batch_op.f("ix_items_category"), ["category"], unique=False)
        batch_op.create_index(batch_op.f("ix_items_last_job_id"), ["last_job_id"], unique=False)
        batch_op.create_index("ix_items_status_claimed_at", ["status", "claimed_at"], unique=False)

    op.create_table(
        "crops",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("index_version_id", sa.Integer(), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("detectors", sa.JSON(), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["index_version_id"],
            ["index_versions.id"],
            name=op.f("fk_crops_index_version_id_index_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_crops_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crops")),
    )
    with op.batch_alter_table("crops", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crops_index_version_id"), ["index_version_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_crops_item_id"), ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("crops", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crops_item_id"))
        batch_op.drop_index(batch_op.f("ix_crops_index_version_id"))

    op.drop_table("crops")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_status_claimed_at")
        batch_op.drop_index(batch_op.f("ix_items_last_job_id"))
        batch_op.drop_index(batch_op.f("ix_items_category"))
        batch_op.drop_index(batch_op.f("ix_items_brand"))

    op.drop_table("items")
    op.drop_table("ingest_jobs")
    with op.batch_alter_table("index_versions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_index_versions_one_live",
            postgresql_where=sa.text("state = 'live'"),
            sqlite_where=sa.text("state = 'live'"),
        )
        batch_op.drop_index(batch_op.f("ix_index_versions_signature"))

    op.drop_table("index_versions")
