"""loop: proposals, compile jobs, route state, route switches, canary samples

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ACTIVE = "state IN ('queued', 'generating', 'training', 'evaluating')"


def upgrade() -> None:
    op.create_table(
        "loop_proposals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("numbers", sa.Text, nullable=False),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at", sa.Float),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("workflow", "fingerprint", name="uq_loop_proposals_workflow_fp"),
    )
    op.create_table(
        "loop_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("proposal_id", sa.Integer, sa.ForeignKey("loop_proposals.id")),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("flowchart", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("artifact", sa.Text),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("ix_loop_jobs_workflow", "loop_jobs", ["workflow"])
    op.create_index(
        "ux_loop_jobs_active",
        "loop_jobs",
        ["workflow"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_table(
        "loop_routes",
        sa.Column("workflow", sa.String(200), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("job_id", sa.Integer),
        sa.Column("artifact", sa.Text),
        sa.Column("fingerprint", sa.String(32)),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("serve_pid", sa.Integer),
    )
    op.create_table(
        "loop_switches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("from_mode", sa.String(16), nullable=False),
        sa.Column("to_mode", sa.String(16), nullable=False),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
    )
    op.create_index("ix_loop_switches_workflow_ts", "loop_switches", ["workflow", "ts"])
    op.create_table(
        "loop_samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("conversation", sa.String(64), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("ok", sa.Integer, nullable=False),
        sa.Column("score", sa.Float),
    )
    op.create_index("ix_loop_samples_workflow_ts", "loop_samples", ["workflow", "ts"])
    op.create_table(
        "loop_rollup",
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("requested_model", sa.String(200), nullable=False),
        sa.Column("hour", sa.Float, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("conversations", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("baseline", sa.Float, nullable=False),
        sa.Column("cost_ok", sa.Float, nullable=False),
        sa.Column("prompt_ok", sa.Integer, nullable=False),
        sa.Column("completion_ok", sa.Integer, nullable=False),
        sa.Column("trimmed", sa.Integer, nullable=False),
        sa.Column("trim_saved", sa.Float, nullable=False),
        sa.Column("min_first_prompt", sa.Integer),
        sa.Column("first_ts", sa.Float, nullable=False),
        sa.Column("last_ts", sa.Float, nullable=False),
    )
    op.create_index("ix_loop_rollup_workflow", "loop_rollup", ["workflow", "hour"])
    op.create_table(
        "loop_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )
    # the live tail (`ts >= rollup_until`) across all workflows needs its own index
    op.create_index("ix_requests_ts", "requests", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_requests_ts", "requests")
    op.drop_table("loop_meta")
    op.drop_index("ix_loop_rollup_workflow", "loop_rollup")
    op.drop_table("loop_rollup")
    op.drop_index("ix_loop_samples_workflow_ts", "loop_samples")
    op.drop_table("loop_samples")
    op.drop_index("ix_loop_switches_workflow_ts", "loop_switches")
    op.drop_table("loop_switches")
    op.drop_table("loop_routes")
    op.drop_index("ux_loop_jobs_active", "loop_jobs")
    op.drop_index("ix_loop_jobs_workflow", "loop_jobs")
    op.drop_table("loop_jobs")
    op.drop_table("loop_proposals")
