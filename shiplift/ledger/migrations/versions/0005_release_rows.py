"""releases: a version label may have more than one row (a --force rebuild adds one)

The first row of a version is its release; a forced rebuild of the same label records a new
row and never rewrites the digest an earlier deployment served (deployments keep their own
digest). The unique (app, version) constraint goes; an index on it stays.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = "id, app, version, repository, digest, git_sha, author, created_at, bad, bad_reason"


def _table(name: str, *extra: sa.Constraint) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("git_sha", sa.String(64)),
        sa.Column("author", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bad", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("bad_reason", sa.Text, nullable=True),
        *extra,
    )


def _copy_into(name: str) -> None:
    op.execute(f"INSERT INTO {name} ({COLUMNS}) SELECT {COLUMNS} FROM releases")
    op.drop_table("releases")
    op.rename_table(name, "releases")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('releases', 'id'), "
            "COALESCE((SELECT MAX(id) FROM releases), 0) + 1, false)"
        )


def upgrade() -> None:
    _table("releases_new")
    _copy_into("releases_new")
    op.create_index("ix_releases_app_version", "releases", ["app", "version"])


def downgrade() -> None:
    op.execute("DELETE FROM releases WHERE id NOT IN (SELECT MIN(id) FROM releases GROUP BY app, version)")
    _table("releases_old", sa.UniqueConstraint("app", "version"))
    _copy_into("releases_old")
    op.create_index("ix_releases_app", "releases", ["app"])
