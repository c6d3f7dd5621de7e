"""initial ledger: releases, deployments, events, environments

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("app", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("git_sha", sa.String(64)),
        sa.Column("author", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bad", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("app", "version"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("app", sa.String(64), nullable=False, index=True),
        sa.Column("environment", sa.String(64), nullable=False, index=True),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("previous_version", sa.String(128)),
        sa.Column("previous_digest", sa.String(80)),
        sa.Column("run_id", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployments.id"), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("step_index", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "environments",
        sa.Column("app", sa.String(64), primary_key=True),
        sa.Column("environment", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(128)),
        sa.Column("digest", sa.String(80)),
        sa.Column("weights", sa.JSON, nullable=False),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("environments")
    op.drop_table("events")
    op.drop_table("deployments")
    op.drop_table("releases")
