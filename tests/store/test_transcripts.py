"""Transcript capture through the real gateway: linear storage, redaction, capture off, retention, export."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select
from tg_testing import ROOT, UPSTREAM_KEY

from gateway.loop.retention import enforce_retention
from gateway.settings import load_settings
from gateway.store.engine import make_engine
from gateway.store.schema import transcript_messages, transcripts

SECRET = "sk-proj-Zq7XkP2mN9vB4cL8dF1gH6jK3sT5wY0e"
TOOLS = [
    {"type": "function", "function": {"name": n, "description": f"{n} tool", "parameters": {"type": "object"}}}
    for n in ("lookup_order", "refund")
]


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)


def converse(gw: Any, upstreams: Any, turns: int, *, workflow: str = "shop", opening: str = "hello") -> list[dict]:
    """One conversation of `turns` requests, history re-sent each turn; every third turn calls a tool.

    Returns the last request's messages plus its reply: the whole conversation as the gateway saw it.
    """
    c = client(gw)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are the shop assistant. Be brief."},
        {"role": "user", "content": opening},
    ]
    for t in range(turns):
        if t % 3 == 1:
            upstreams["frontier"].script({"tool_calls": [{"name": "lookup_order", "arguments": {"id": f"A{t}"}}]})
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=messages, tools=TOOLS, extra_headers={"X-Tiergate-Workflow": workflow}
        )
        msg = raw.parse().choices[0].message
        last = len(messages) + 1
        if msg.tool_calls:
            call = msg.tool_calls[0]
            messages.append({"role": "assistant", "content": msg.content, "tool_calls": [call.model_dump()]})
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"ok": True, "t": t})})
        else:
            messages.append({"role": "assistant", "content": msg.content})
            messages.append({"role": "user", "content": f"turn {t}: and then?"})
    return messages[:last]


def rows(db_url: str) -> tuple[list[dict], list[dict]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            heads = [dict(r) for r in conn.execute(select(transcripts)).mappings()]
            msgs = [
                dict(r)
                for r in conn.execute(
                    select(transcript_messages).order_by(transcript_messages.c.transcript_id, transcript_messages.c.seq)
                ).mappings()
            ]
    finally:
        engine.dispose()
    return heads, msgs


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'capture.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_a_20_turn_conversation_is_stored_linearly_with_secrets_redacted(start_gateway, upstreams, store_url):
    gw = start_gateway({"storage": {"url": store_url}, "defaults": {"capture": {"redact": ["emails"]}}})
    opening = f"hello, my key is {SECRET}, upstream {UPSTREAM_KEY}, mail ada@example.com, Bearer abcdefghijklmnopqrstuv"
    sent = converse(gw, upstreams, 20, opening=opening)
    gw.stop()  # graceful stop (SIGTERM): every accepted turn is written before the process ends
    heads, msgs = rows(store_url)
    assert len(heads) == 1 and heads[0]["turns"] == 20 and heads[0]["workflow"] == "shop"
    # one row per message: the app's messages once, plus each reply once (no history re-stored)
    assert len(msgs) == heads[0]["messages"] == len(sent)
    per_turn = [sum(len(m["body"]) for m in msgs if m["turn"] == t) for t in range(1, 21)]
    assert max(per_turn[1:]) < 3 * min(per_turn[1:]), per_turn  # flat per turn: linear, not quadratic
    history = len(json.dumps(sent))
    assert sum(per_turn) < 1.3 * history, (sum(per_turn), history)
    stored = json.dumps([json.loads(m["body"]) for m in msgs])
    for secret in (SECRET, UPSTREAM_KEY, "ada@example.com", "abcdefghijklmnopqrstuv"):
        assert secret not in stored
    assert "[redacted:secret]" in stored and "[redacted:email]" in stored
    if store_url.startswith("sqlite"):
        raw = b"".join(p.read_bytes() for p in Path(store_url[len("sqlite:///") :]).parent.glob("capture.db*"))
        assert SECRET.encode() not in raw and UPSTREAM_KEY.encode() not in raw
    else:
        import psycopg

        with psycopg.connect(store_url) as conn:
            n = conn.execute(
                "SELECT count(*) FROM transcript_messages WHERE body LIKE %s OR body LIKE %s",
                (f"%{SECRET}%", f"%{UPSTREAM_KEY}%"),
            ).fetchone()
            assert n is not None and n[0] == 0
    # the export gives the conversation back turn for turn as sent (secrets redacted), reply included
    out = gw.config_path.parent / "shop.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "export", "shop", "--out", str(out), "--config", str(gw.config_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    conv = json.loads(lines[0])
    assert [m["role"] for m in conv["messages"]] == [m["role"] for m in sent]
    expected = json.dumps(sent)
    for secret, mark in ((SECRET, "secret"), (UPSTREAM_KEY, "secret"), ("ada@example.com", "email")):
        expected = expected.replace(secret, f"[redacted:{mark}]")
    expected = expected.replace("Bearer abcdefghijklmnopqrstuv", "[redacted:secret]")
    assert conv["messages"] == json.loads(expected)
    assert [t["function"]["name"] for t in conv["tools"]] == ["lookup_order", "refund"]


def test_capture_off_stores_nothing(start_gateway, upstreams, tmp_path):
    gw = start_gateway({"defaults": {"capture": False}})
    converse(gw, upstreams, 3)
    assert len(gw.wait_records(3)) == 3
    gw.stop()
    heads, msgs = rows(gw.db_url)
    assert heads == [] and msgs == []


def test_capture_off_for_one_listed_workflow_only(start_gateway, upstreams):
    gw = start_gateway({"workflows": [{"name": "private", "capture": {"enabled": False}}]})
    converse(gw, upstreams, 2, workflow="private")
    converse(gw, upstreams, 2, workflow="public")
    gw.stop()
    heads, _ = rows(gw.db_url)
    assert [h["workflow"] for h in heads] == ["public"]


def test_retention_removes_old_and_surplus_conversations(start_gateway, upstreams):
    gw = start_gateway({"defaults": {"capture": {"retention_days": 1, "max_conversations": 2}}})
    for i in range(3):
        converse(gw, upstreams, 2, opening=f"conversation {i}")
    gw.stop()
    heads, _ = rows(gw.db_url)
    assert len(heads) == 3
    settings = load_settings(gw.config_path)
    engine = make_engine(gw.db_url)
    try:
        assert enforce_retention(engine, settings) == 1  # the oldest beyond the two most recent
        with engine.connect() as conn:
            kept = [r[0] for r in conn.execute(select(transcripts.c.id))]
            assert len(kept) == 2
            n = conn.execute(select(func.count()).select_from(transcript_messages)).scalar_one()
            assert n == 2 * 5
        assert enforce_retention(engine, settings, now=time.time() + 2 * 86400) == 2  # older than a day
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(transcript_messages)).scalar_one() == 0
    finally:
        engine.dispose()


def test_admin_export_endpoint_streams_jsonl(start_gateway, upstreams):
    gw = start_gateway()
    for i in range(3):
        converse(gw, upstreams, 2, opening=f"conversation {i}")
    deadline = time.monotonic() + 10
    while True:
        r = httpx.get(f"{gw.url}/api/workflows/shop/export")
        lines = r.text.splitlines()
        if len(lines) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    convs = [json.loads(line) for line in lines]
    assert [c["messages"][1]["content"] for c in convs] == [f"conversation {i}" for i in range(3)]
    assert all(c["tiergate"]["workflow"] == "shop" for c in convs)
    one = httpx.get(f"{gw.url}/api/workflows/shop/export", params={"limit": 1}).text.splitlines()
    assert len(one) == 1


def test_a_conversation_id_resent_from_scratch_is_kept_apart_and_a_retry_replaces_the_tail(tmp_path):
    from gateway.proxy.capture import CaptureConfig, Redactor
    from gateway.store.engine import migrate
    from gateway.store.transcripts import Turn, export_lines, write_turns

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(engine)
    red = Redactor(CaptureConfig()).json
    sys_msg, hi = {"role": "system", "content": "You help."}, {"role": "user", "content": "hi"}

    def turn(n: int, msgs: list, continued: int, reply: str) -> Turn:
        return Turn("w", "conv-1", n, time.time(), msgs, continued, None, {"role": "assistant", "content": reply}, red)

    write_turns(engine, [turn(1, [sys_msg, hi], 0, "a1")])
    follow = [sys_msg, hi, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "more"}]
    write_turns(engine, [turn(2, follow, 3, "a2")])
    write_turns(engine, [turn(2, follow, 3, "a2, retried")])  # the same turn again: the tail is replaced
    for _ in range(2):  # the app restarts its history under the same id: kept apart, twice without error
        write_turns(engine, [turn(3, [sys_msg, {"role": "user", "content": "new start"}], 0, "b1")])
    lines = [json.loads(x) for x in export_lines(engine, "w")]
    engine.dispose()
    assert [[m["content"] for m in line["messages"]] for line in lines] == [
        ["You help.", "hi", "a1", "more", "a2, retried"],
        ["You help.", "new start", "b1"],
    ]


def test_streamed_turns_are_captured_with_their_replies(start_gateway, upstreams):
    gw = start_gateway()
    c = client(gw)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "first"}]
    for t in range(2):
        text = ""
        with c.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=messages, stream=True, extra_headers={"X-Tiergate-Workflow": "streamed"}
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"]:
                        text += chunk["choices"][0]["delta"].get("content") or ""
        messages += [{"role": "assistant", "content": text}]
        if t == 0:
            messages += [{"role": "user", "content": "second"}]
    gw.stop()
    heads, msgs = rows(gw.db_url)
    assert len(heads) == 1 and heads[0]["turns"] == 2
    assert [json.loads(m["body"]) for m in msgs] == messages
    assert [m["reply"] for m in msgs] == [False, True, False, True]


def test_the_background_job_enforces_retention_in_a_running_gateway(start_gateway, upstreams):
    gw = start_gateway({
        "defaults": {"capture": {"max_conversations": 1}},
        "loop": {"threshold_interval_s": 0.3, "poll_interval_s": 0.2},
    })
    for i in range(3):
        converse(gw, upstreams, 1, opening=f"conversation {i}")
    def kept() -> list[str]:
        _, msgs = rows(gw.db_url)
        return [json.loads(m["body"])["content"] for m in msgs if m["seq"] == 1]  # each opening message

    deadline = time.monotonic() + 20
    while kept() != ["conversation 2"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert kept() == ["conversation 2"]  # the most recent is kept, the two older ones removed
    heads, msgs = rows(gw.db_url)
    assert len(heads) == 1 and {m["transcript_id"] for m in msgs} == {heads[0]["id"]}


def test_a_retried_turn_in_the_same_batch_replaces_the_tail_without_a_duplicate_key(tmp_path):
    # a looping or retrying app can send a turn and its retry within one flush interval: one batch
    from gateway.proxy.capture import CaptureConfig, Redactor
    from gateway.store.engine import migrate
    from gateway.store.transcripts import Turn, export_lines, write_turns

    engine = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    migrate(engine)
    red = Redactor(CaptureConfig()).json
    sys_msg, hi = {"role": "system", "content": "You help."}, {"role": "user", "content": "hi"}

    def turn(n: int, msgs: list, continued: int, reply: str) -> Turn:
        return Turn("w", "conv-1", n, time.time(), msgs, continued, None, {"role": "assistant", "content": reply}, red)

    follow = [sys_msg, hi, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "more"}]
    write_turns(engine, [turn(1, [sys_msg, hi], 0, "a1"), turn(2, follow, 3, "a2"), turn(2, follow, 3, "a2, again")])
    lines = [json.loads(x) for x in export_lines(engine, "w")]
    engine.dispose()
    assert [[m["content"] for m in line["messages"]] for line in lines] == [
        ["You help.", "hi", "a1", "more", "a2, again"],
    ]


def test_a_store_refusing_capture_serves_every_request_and_says_so(start_gateway, upstreams):
    """Capture's writes fail (a trigger refuses transcript messages) while the ledger's succeed: every
    request is answered and recorded, and the dropped turns show in /healthz and /metrics, not only
    in the log."""
    gw = start_gateway()
    engine = make_engine(gw.db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER refuse_capture BEFORE INSERT ON transcript_messages "
                             "BEGIN SELECT RAISE(ABORT, 'capture refused'); END")
    engine.dispose()
    assert httpx.get(f"{gw.url}/healthz").json()["capture"] == {"status": "ok", "written": 0, "dropped": 0,
                                                               "pending": 0}
    converse(gw, upstreams, 3)
    assert len(gw.wait_records(3)) == 3
    deadline = time.monotonic() + 10
    while (health := httpx.get(f"{gw.url}/healthz").json())["capture"]["dropped"] < 3:
        assert time.monotonic() < deadline, health
        time.sleep(0.05)
    assert health["status"] == "degraded" and health["capture"]["status"] == "dropping", health
    assert health["ledger"]["status"] == "ok" and health["capture"]["written"] == 0
    assert "tiergate_capture_dropped_turns_total 3.0" in httpx.get(f"{gw.url}/metrics").text
    gw.stop()
    assert rows(gw.db_url) == ([], [])
