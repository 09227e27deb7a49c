"""index_versions.base_version_id, postprocess, whitening: DBA / PCA-whitened versions of a base version

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("index_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("base_version_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("postprocess", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("whitening", sa.LargeBinary(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_index_versions_base_version_id_index_versions"),
            "index_versions",
            ["base_version_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(batch_op.f("ix_index_versions_base_version_id"), ["base_version_id"])


def downgrade() -> None:
    with op.batch_alter_table("index_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_index_versions_base_version_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_index_versions_base_version_id_index_versions"), type_="foreignkey"
        )
        batch_op.drop_column("whitening")
        batch_op.drop_column("postprocess")
        batch_op.drop_column("base_version_id")
