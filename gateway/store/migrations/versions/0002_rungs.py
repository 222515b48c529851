"""rungs 1 and 2: trimming and routing columns on the ledger, shadow labels, logged exchanges

Revision ID: 0002_rungs
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_rungs"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("tools_called", sa.Text))
        batch.add_column(sa.Column("tools_dropped", sa.Integer))
        batch.add_column(sa.Column("trim_saved_usd", sa.Float))
        batch.add_column(sa.Column("stage", sa.String(16)))
    op.create_table(
        "route_labels",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("good", sa.Boolean, nullable=False),
        sa.Column("how", sa.String(200), nullable=False),
    )
    op.create_index("ix_route_labels_workflow_ts", "route_labels", ["workflow", "ts"])
    op.create_table(
        "exchanges",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
    )
    op.create_index("ix_exchanges_workflow_ts", "exchanges", ["workflow", "ts"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_workflow_ts", "exchanges")
    op.drop_table("exchanges")
    op.drop_index("ix_route_labels_workflow_ts", "route_labels")
    op.drop_table("route_labels")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("stage")
        batch.drop_column("trim_saved_usd")
        batch.drop_column("tools_dropped")
        batch.drop_column("tools_called")
