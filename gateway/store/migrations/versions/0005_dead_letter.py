"""ledger dead letters: rows the store refused, kept with the reason instead of dropped

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("record", sa.Text, nullable=False),
    )
    op.create_index("ix_ledger_dead_letters_ts", "ledger_dead_letters", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_ledger_dead_letters_ts", table_name="ledger_dead_letters")
    op.drop_table("ledger_dead_letters")
