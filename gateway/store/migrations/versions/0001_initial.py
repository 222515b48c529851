"""initial schema: requests ledger, workflows, api keys

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("conversation", sa.String(64), nullable=False),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("requested_model", sa.String(200), nullable=False),
        sa.Column("served_model", sa.String(200)),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("tokens_estimated", sa.Boolean, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("baseline_cost_usd", sa.Float, nullable=False),
        sa.Column("ttfb_ms", sa.Float),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("prompt_fingerprint", sa.String(32)),
        sa.Column("config_hash", sa.String(16)),
        sa.Column("route_reason", sa.String(200)),
        sa.Column("prompt_tokens_before_trim", sa.Integer),
    )
    op.create_index("ix_requests_workflow_ts", "requests", ["workflow", "ts"])
    op.create_index("ix_requests_conversation", "requests", ["conversation"])
    op.create_index("ix_requests_key_ts", "requests", ["key_id", "ts"])
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(32)),
        sa.Column("first_seen", sa.Float, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("workflow", sa.String(200)),
        sa.Column("rate_limit_rpm", sa.Integer),
        sa.Column("monthly_budget_usd", sa.Float),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("revoked", sa.Float),
        sa.Column("note", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("workflows")
    op.drop_index("ix_requests_key_ts", "requests")
    op.drop_index("ix_requests_conversation", "requests")
    op.drop_index("ix_requests_workflow_ts", "requests")
    op.drop_table("requests")
