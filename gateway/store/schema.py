"""The store's tables, as SQLAlchemy Core metadata. Changes go through a migration in migrations/versions."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

requests = Table(
    "requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("ts", Float, nullable=False, doc="unix seconds when the request arrived"),
    Column("workflow", String(200), nullable=False),
    Column("conversation", String(64), nullable=False),
    Column("turn", Integer, nullable=False),
    Column("key_id", String(32)),
    Column("requested_model", String(200), nullable=False),
    Column("served_model", String(200)),
    Column("tier", String(16), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("tokens_estimated", Boolean, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("baseline_cost_usd", Float, nullable=False),
    Column("ttfb_ms", Float),
    Column("latency_ms", Float, nullable=False),
    Column("status", Integer, nullable=False),
    Column("error_type", String(64)),
    Column("attempts", Integer, nullable=False),
    Column("prompt_fingerprint", String(32)),
    Column("config_hash", String(16)),
    Column("route_reason", String(200)),
    Column("prompt_tokens_before_trim", Integer),
    Column("tools_called", Text, doc="comma-separated tool names the reply called"),
    Column("tools_dropped", Integer, doc="tool schemas trimming removed from the request"),
    Column("trim_saved_usd", Float, doc="input cost of what trimming removed, at the served model's price"),
    Column("stage", String(16), doc="`first` on a conversation's opening user turn, `later` after it"),
    Index("ix_requests_workflow_ts", "workflow", "ts"),
    Index("ix_requests_conversation", "conversation"),
    Index("ix_requests_key_ts", "key_id", "ts"),
    Index("ix_requests_ts", "ts"),  # migration 0002: the dashboard's time-window scans
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("source", String(16), nullable=False, doc="header, metadata, key, config or fingerprint"),
    Column("fingerprint", String(32)),
    Column("first_seen", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False, doc="first characters, to recognise a key in lists"),
    Column("workflow", String(200)),
    Column("rate_limit_rpm", Integer),
    Column("monthly_budget_usd", Float),
    Column("created", Float, nullable=False),
    Column("revoked", Float),
    Column("note", Text),
)

route_labels = Table(
    "route_labels",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("ts", Float, nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("request_id", String(32), nullable=False),
    Column("request", Text, nullable=False, doc="JSON: the recent messages and tool names the features need"),
    Column(
        "good", Boolean, nullable=False, doc="the cheap model's shadow answer was as good as the frontier's"
    ),
    Column("how", String(200), nullable=False),
    Index("ix_route_labels_workflow_ts", "workflow", "ts"),
)

exchanges = Table(
    "exchanges",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("ts", Float, nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("request", Text, nullable=False, doc="JSON: recent messages of a frontier-served request"),
    Column("response", Text, nullable=False, doc="JSON: the frontier's reply message"),
    Index("ix_exchanges_workflow_ts", "workflow", "ts"),
)

transcripts = Table(
    "transcripts",
    metadata,
    Column("id", String(32), primary_key=True, doc="hash of (workflow, conversation)"),
    Column("workflow", String(200), nullable=False),
    Column("conversation", String(80), nullable=False),
    Column("started", Float, nullable=False, doc="unix seconds of the first captured turn"),
    Column("updated", Float, nullable=False, doc="unix seconds of the last captured turn"),
    Column("turns", Integer, nullable=False),
    Column("messages", Integer, nullable=False, doc="rows in transcript_messages"),
    Column("tools", Text, doc="JSON: the tools offered, latest set (redacted)"),
    Column("tools_hash", String(32)),
    Index("ix_transcripts_workflow_started", "workflow", "started"),
    Index("ix_transcripts_updated", "updated"),
)

transcript_messages = Table(
    "transcript_messages",
    metadata,
    Column("transcript_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True, doc="position in the conversation, from 0"),
    Column("turn", Integer, nullable=False, doc="the request that sent (or answered with) this message"),
    Column("reply", Boolean, nullable=False, doc="the model's answer rather than a message the app sent"),
    Column("body", Text, nullable=False, doc="JSON: the message as sent, secrets redacted"),
)

ledger_dead_letters = Table(
    "ledger_dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False, doc="unix seconds when the store refused the record"),
    Column("record_id", String(64), nullable=False, doc="the refused record's id (not unique: a duplicate)"),
    Column("reason", Text, nullable=False, doc="the store's error, first line"),
    Column("record", Text, nullable=False, doc="JSON: the refused ledger row"),
    Index("ix_ledger_dead_letters_ts", "ts"),
)
