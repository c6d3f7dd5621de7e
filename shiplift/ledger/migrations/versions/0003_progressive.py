"""progressive delivery: the weights a deployment reached, why a version is bad, pause decisions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("weights", sa.JSON, nullable=True))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("bad_reason", sa.Text, nullable=True))
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("step_index", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("step_index")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("bad_reason")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("weights")
