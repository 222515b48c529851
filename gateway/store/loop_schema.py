"""The loop's tables (proposals, compile jobs, route state, switches, canary samples).

They sit on `gateway.store.schema.metadata` so one MetaData describes the whole store; migration 0002
creates them. Times are unix seconds, like the ledger's.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint, text

from gateway.store.schema import metadata

ACTIVE_JOB_STATES = ("queued", "generating", "training", "evaluating")
JOB_STATES = (*ACTIVE_JOB_STATES, "failed", "ready")
ROUTE_MODES = ("frontier", "canary", "compiled")

_ACTIVE_SQL = "state IN ('queued', 'generating', 'training', 'evaluating')"

proposals = Table(
    "loop_proposals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow", String(200), nullable=False),
    Column("fingerprint", String(32), nullable=False, doc="the stable prompt fingerprint the proposal is for"),
    Column("kind", String(16), nullable=False, doc="compile or recompile"),
    Column("status", String(16), nullable=False, doc="open, approved, rejected"),
    Column("created", Float, nullable=False),
    Column("numbers", Text, nullable=False, doc="JSON: the payback figures when raised"),
    Column("decided_by", String(200)),
    Column("decided_at", Float),
    Column("note", Text),
    # one proposal per threshold crossing: a crossing is a (workflow, stable fingerprint) pair
    UniqueConstraint("workflow", "fingerprint", name="uq_loop_proposals_workflow_fp"),
)

jobs = Table(
    "loop_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow", String(200), nullable=False),
    Column("proposal_id", Integer, ForeignKey("loop_proposals.id")),
    Column("state", String(16), nullable=False),
    Column("progress", Float, nullable=False, doc="0..1 over the whole compile"),
    Column("detail", Text, doc="JSON: stage details (step, loss, eval figures)"),
    Column("out_dir", Text, nullable=False),
    Column("flowchart", Text, nullable=False),
    Column("pid", Integer),
    Column("attempts", Integer, nullable=False, doc="compile processes started for this job"),
    Column("error", Text),
    Column("artifact", Text),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Index("ix_loop_jobs_workflow", "workflow"),
    # one active job per workflow, enforced by the store itself (two gateways approving at once)
    Index(
        "ux_loop_jobs_active",
        "workflow",
        unique=True,
        sqlite_where=text(_ACTIVE_SQL),
        postgresql_where=text(_ACTIVE_SQL),
    ),
)

routes = Table(
    "loop_routes",
    metadata,
    Column("workflow", String(200), primary_key=True),
    Column("mode", String(16), nullable=False, doc="frontier, canary or compiled"),
    Column("share", Float, nullable=False, doc="share of new conversations on the compiled model"),
    Column("model", String(200), doc="configured model name serving the compiled workflow"),
    Column("job_id", Integer),
    Column("artifact", Text),
    Column("fingerprint", String(32), doc="prompt fingerprint the compiled model was built for"),
    Column("since", Float, nullable=False, doc="when the current mode started"),
    Column("serve_pid", Integer),
)

switches = Table(
    "loop_switches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow", String(200), nullable=False),
    Column("ts", Float, nullable=False),
    Column("from_mode", String(16), nullable=False),
    Column("to_mode", String(16), nullable=False),
    Column("share", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(200), nullable=False, doc="`loop` for automatic switches, else who"),
    Index("ix_loop_switches_workflow_ts", "workflow", "ts"),
)

samples = Table(
    "loop_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow", String(200), nullable=False),
    Column("conversation", String(64), nullable=False),
    Column("ts", Float, nullable=False),
    Column("ok", Integer, nullable=False, doc="1 when the compiled side answered without error"),
    Column("score", Float, doc="sampled comparison against the frontier, 0..1"),
    Index("ix_loop_samples_workflow_ts", "workflow", "ts"),
)

# Hourly sums of the ledger, so pages and threshold checks read thousands of rows, not millions.
# Rows before `loop_meta.rollup_until` are folded in here; later ones are read live (see loop_rollup.py).
rollup = Table(
    "loop_rollup",
    metadata,
    Column("workflow", String(200), nullable=False),
    Column("fingerprint", String(32), nullable=False, doc="'' when the ledger had none"),
    Column("tier", String(16), nullable=False),
    Column("requested_model", String(200), nullable=False),
    Column("hour", Float, nullable=False, doc="start of the hour, unix seconds"),
    Column("requests", Integer, nullable=False),
    Column("conversations", Integer, nullable=False, doc="first turns: each conversation has exactly one"),
    Column("errors", Integer, nullable=False),
    Column("cost", Float, nullable=False),
    Column("baseline", Float, nullable=False),
    Column("cost_ok", Float, nullable=False, doc="cost of the successful requests only"),
    Column("prompt_ok", Integer, nullable=False),
    Column("completion_ok", Integer, nullable=False),
    Column("trimmed", Integer, nullable=False, doc="prompt tokens trimming removed"),
    Column("trim_saved", Float, nullable=False, doc="USD trimming saved (the ledger's trim_saved_usd)"),
    Column("min_first_prompt", Integer, doc="smallest first-turn prompt: the static part's estimate"),
    Column("first_ts", Float, nullable=False),
    Column("last_ts", Float, nullable=False),
    Index("ix_loop_rollup_workflow", "workflow", "hour"),
)

meta = Table(
    "loop_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Float, nullable=False),
)
