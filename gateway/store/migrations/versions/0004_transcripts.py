"""transcript capture: one row per conversation, one row per message appended turn by turn

Revision ID: 0004
Revises: 0003

A conversation's history is re-sent on every turn; only the messages new since the previous turn (and
the reply) are stored, so storage grows with the turns, not with history length squared.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transcripts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("conversation", sa.String(80), nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("turns", sa.Integer, nullable=False),
        sa.Column("messages", sa.Integer, nullable=False),
        sa.Column("tools", sa.Text),
        sa.Column("tools_hash", sa.String(32)),
    )
    op.create_index("ix_transcripts_workflow_started", "transcripts", ["workflow", "started"])
    op.create_index("ix_transcripts_updated", "transcripts", ["updated"])
    op.create_table(
        "transcript_messages",
        sa.Column("transcript_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("reply", sa.Boolean, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("transcript_messages")
    op.drop_index("ix_transcripts_updated", "transcripts")
    op.drop_index("ix_transcripts_workflow_started", "transcripts")
    op.drop_table("transcripts")
