"""deployments: the plan a rollout runs and its last analysis measurement (`status --watch`)

``plan`` is the description of every step the rollout chose (its step index points into it);
``analysis`` the last measurement an analysis step took. Both stay empty for deployments
recorded before, and for those that never reach the rollout (rejected at the gate).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("plan", sa.JSON, nullable=True))
        batch.add_column(sa.Column("analysis", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("analysis")
        batch.drop_column("plan")
