"""backups and restore drills

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("app", sa.String(64), nullable=False, index=True),
        sa.Column("database", sa.String(64), nullable=False, index=True),
        sa.Column("store", sa.String(512), nullable=False),
        sa.Column("object", sa.String(512), nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size_stored", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("release_version", sa.String(128)),
        sa.Column("release_digest", sa.String(80)),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), index=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("app", sa.String(64), nullable=False, index=True),
        sa.Column("database", sa.String(64), nullable=False, index=True),
        sa.Column("backup_id", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("restore_seconds", sa.Float),
        sa.Column("rows", sa.Integer),
        sa.Column("run_id", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("drills")
    op.drop_table("backups")
