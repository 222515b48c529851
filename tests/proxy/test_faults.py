"""Fault injection: every upstream fault and every bad input leaves exactly one truthful ledger row.

Each test drives one scripted fault (tests/fake_upstream.py) through a real gateway with the official
SDK, and checks the status, the OpenAI error shape and the single ledger row (status, error type), on
a SQLite file and on PostgreSQL. Models here have no retries or fallbacks (fault_harness.py), so what
the upstream did is what the client and the ledger see.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fault_harness import FaultGateway, store_url
from tg_testing import Upstream


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake_upstreams: dict[str, Upstream],
) -> Iterator[FaultGateway]:
    tmp = tmp_path_factory.mktemp(f"faults-{request.param}")
    for url in store_url(request.param, tmp):
        gateway = FaultGateway.start(tmp, fake_upstreams, url, {"ledger": {"degraded_seconds": 60}})
        yield gateway
        log = gateway.log()
        gateway.stop()
        assert "finished twice" not in log  # the guard against a second record never had to act


def client(gw: FaultGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)


def wf() -> str:
    return "faults-" + uuid.uuid4().hex[:8]


def ask(workflow: str, model: str = "solo", **kw: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hello there"}],
        "extra_headers": {"X-Tiergate-Workflow": workflow},
        **kw,
    }


def assert_error_shape(
    body: dict[str, Any], type_: str | None = None, code: str | None = None
) -> dict[str, Any]:
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)
    if type_:
        assert err["type"] == type_
    if code:
        assert err["code"] == code
    return err  # type: ignore[no-any-return]


def one_row(gw: FaultGateway, workflow: str, status: int, error_type: str | None) -> dict[str, Any]:
    rows = gw.rows(workflow)
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["status"], row["error_type"]) == (status, error_type), row
    assert not [d for d in gw.dead_letters() if d["record_id"] == row["id"]]
    return row


def no_internals(message: str, port: int | None = None) -> None:
    for leak in ("127.0.0.1", "localhost", "litellm", "aiohttp", "Exception", "Error:"):
        assert leak not in message, message
    if port is not None:
        assert str(port) not in message, message


# ---------------------------------------------------------------- upstream faults, not streaming


@pytest.mark.parametrize(
    ("step", "status", "error_type"),
    [
        ({"status": 500}, 502, "upstream_error"),
        ({"status": 503}, 503, "upstream_error"),
        ({"delay": 3}, 504, "upstream_timeout"),
        ({"raw": "<html>definitely not json"}, 502, "upstream_error"),
        ({"raw": "[1, 2, 3]"}, 502, "upstream_error"),
        ({"raw": '"a string"'}, 502, "upstream_error"),
        ({"raw": "null"}, 502, "upstream_error"),
        ({"truncate": 40}, 502, "upstream_truncated"),
    ],
    ids=["500", "503", "timeout", "garbage", "json-array", "json-string", "json-null", "truncated-body"],
)
def test_upstream_fault(gw, upstreams, step, status, error_type):
    w = wf()
    upstreams["frontier"].script(step)
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(**ask(w))
    assert caught.value.status_code == status
    assert_error_shape(caught.value.response.json())
    row = one_row(gw, w, status, error_type)
    assert caught.value.response.headers["x-request-id"] == row["id"]


def test_upstream_429_passes_retry_after_through(gw, upstreams):
    w = wf()
    upstreams["frontier"].script({"status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        client(gw).chat.completions.create(**ask(w))
    assert caught.value.response.headers["retry-after"] == "7"
    assert_error_shape(caught.value.response.json())
    one_row(gw, w, 429, "upstream_error")


def test_upstream_unreachable(gw, upstreams):
    w = wf()
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(**ask(w, model="gone"))
    assert caught.value.status_code == 502
    err = assert_error_shape(caught.value.response.json(), "upstream_error", "upstream_unavailable")
    no_internals(err["message"])
    one_row(gw, w, 502, "upstream_unavailable")


# ---------------------------------------------------------------- streams


@pytest.mark.parametrize(
    ("model", "step", "status", "error_type"),
    [
        ("solo", {"status": 500}, 502, "upstream_error"),
        ("solo", {"status": 429, "retry_after": 3}, 429, "upstream_error"),
        ("solo", {"delay": 3}, 504, "upstream_timeout"),
        ("gone", {}, 502, "upstream_unavailable"),
        ("claude", {"status": 500}, 502, "upstream_error"),
    ],
    ids=["500", "429", "timeout", "unreachable", "litellm-500"],
)
def test_stream_failing_before_the_first_byte_is_recorded_once(
    gw, upstreams, model, step, status, error_type
):
    """The data-loss bug: this used to be recorded twice, and the duplicate took its batch down with it."""
    w = wf()
    upstreams["frontier"].script(step)
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(**ask(w, model=model, stream=True))
    assert caught.value.status_code == status
    assert_error_shape(caught.value.response.json())
    one_row(gw, w, status, error_type)
    # the good requests of the same moment are all there (they shared the failed one's batch)
    good = wf()
    for _ in range(5):
        client(gw).chat.completions.create(**ask(good))
    assert len(gw.rows(good, n=5)) == 5


def stream_text(gw: FaultGateway, w: str, model: str = "solo") -> tuple[str, openai.APIError | None]:
    text, error = "", None
    try:
        for chunk in client(gw).chat.completions.create(**ask(w, model=model, stream=True)):
            text += "".join(c.delta.content or "" for c in chunk.choices)
    except openai.APIError as exc:
        error = exc
    return text, error


def test_stream_without_done_is_an_error(gw, upstreams):
    w = wf()
    upstreams["frontier"].script({"content": "a b c", "no_done": True})
    text, error = stream_text(gw, w)
    assert text == "a b c"  # what came is relayed; then the client is told it is incomplete
    assert error is not None and "[DONE]" in error.message
    assert isinstance(error.body, dict) and error.body["code"] == "upstream_truncated"
    one_row(gw, w, 502, "upstream_truncated")


def test_stream_cut_by_the_upstream_is_an_error(gw, upstreams):
    w = wf()
    upstreams["frontier"].script({"content": "a b c d e f", "chunks": 6, "disconnect_after": 2})
    text, error = stream_text(gw, w)
    assert text.startswith("a") and error is not None
    assert isinstance(error.body, dict) and error.body["code"] == "upstream_unavailable"
    one_row(gw, w, 502, "upstream_unavailable")


def test_error_event_mid_stream_is_recorded_with_its_type(gw, upstreams):
    w = wf()
    upstreams["frontier"].script({"content": "a b c d", "chunks": 4, "error_after": 2})
    text, error = stream_text(gw, w)
    assert text == "a b" and error is not None and "scripted overload" in error.message
    one_row(gw, w, 502, "overloaded")


def test_client_leaving_a_silent_stream_cancels_the_upstream_at_once(gw, upstreams):
    w = wf()
    upstreams["frontier"].script({"content": "a b c d", "chunks": 4, "silent_after": 1})
    stream = client(gw).chat.completions.create(**ask(w, model="patient", stream=True))
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    t0 = time.monotonic()
    stream.close()  # the upstream is silent now; its timeout is 30 s
    while upstreams["frontier"].stats()["streams_cancelled"] == 0 and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert took < 5.0, f"the upstream call outlived the client by {took:.1f}s"  # its own timeout: 30 s
    row = one_row(gw, w, 200, "client_disconnected")
    assert row["served_model"] == "patient"


# ---------------------------------------------------------------- litellm-routed providers


def test_litellm_errors_map_to_the_gateway_family_without_internals(gw, upstreams):
    w = wf()
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(**ask(w, model="claude-gone", max_tokens=5))
    assert caught.value.status_code == 502
    err = assert_error_shape(caught.value.response.json(), "upstream_error", "upstream_unavailable")
    no_internals(err["message"])
    one_row(gw, w, 502, "upstream_unavailable")

    w = wf()
    upstreams["frontier"].script({"status": 529})
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(**ask(w, model="claude", max_tokens=5))
    err = assert_error_shape(caught.value.response.json(), "upstream_error", "upstream_error")
    assert caught.value.status_code == 502 and re.fullmatch(
        r"upstream `claude` answered HTTP 5\d\d", err["message"]
    )
    one_row(gw, w, 502, "upstream_error")

    w = wf()
    upstreams["frontier"].script({"delay": 3})
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(**ask(w, model="claude", max_tokens=5))
    assert caught.value.status_code == 504
    assert_error_shape(caught.value.response.json(), "upstream_error", "upstream_timeout")
    one_row(gw, w, 504, "upstream_timeout")


# ---------------------------------------------------------------- bad client input


def nested(depth: int) -> str:
    """A placeholder the request body swaps for `depth` levels of objects (json.dumps stops near 1000)."""
    return f"@@nested-{depth}@@"


def encode(body: dict[str, Any]) -> bytes:
    raw = json.dumps(body)
    for depth in (300, 1000):
        raw = raw.replace(f'"{nested(depth)}"', '{"a":' * depth + '"leaf"' + "}" * depth)
    return raw.encode()


BAD_INPUT = [
    (
        "content-part-text",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 42}]}]},
        "messages[0].content[0].text",
    ),
    (
        "tool-calls-not-a-list",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": {"id": "c1"}},
                {"role": "user", "content": "and?"},
            ]
        },
        "messages[1].tool_calls",
    ),
    (
        "tool-calls-not-objects",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": ["lookup"]},
                {"role": "user", "content": "and?"},
            ]
        },
        "messages[1].tool_calls[0]",
    ),
    (
        "stream-options-not-an-object",
        {"stream": True, "stream_options": "include_usage", "messages": [{"role": "user", "content": "hi"}]},
        "stream_options",
    ),
    (
        "nested-300",
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": nested(300)}}],
        },
        "tools",
    ),
    (
        "nested-1000",
        {"messages": [{"role": "user", "content": "hi"}], "response_format": nested(1000)},
        "response_format",
    ),
]


@pytest.mark.parametrize(("body", "param"), [b[1:] for b in BAD_INPUT], ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_a_400_naming_the_field_before_any_upstream_call(gw, upstreams, body, param):
    w = wf()
    raw = encode({"model": "solo", **body})
    resp = httpx.post(
        f"{gw.v1}/chat/completions",
        content=raw,
        headers={"Content-Type": "application/json", "X-Tiergate-Workflow": w},
        timeout=10,
    )
    assert resp.status_code == 400, resp.text
    err = assert_error_shape(resp.json(), "invalid_request_error")
    assert err["param"] == param and f"`{param}" in err["message"]
    assert upstreams["frontier"].stats()["requests"] == 0
    row = one_row(gw, w, 400, "invalid_request_error")
    assert row["cost_usd"] == 0 and row["id"] == resp.headers["x-request-id"]


# ---------------------------------------------------------------- the ledger writer under a refusing store


def poison(gw: FaultGateway, workflow: str) -> None:
    """Make the store refuse one workflow's rows, as a constraint would."""
    with gw.engine.begin() as conn:
        if gw.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER poison BEFORE INSERT ON requests WHEN NEW.workflow = '{workflow}' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
            )
        else:
            conn.exec_driver_sql(
                f"ALTER TABLE requests ADD CONSTRAINT poison CHECK (workflow <> '{workflow}') NOT VALID"
            )


def test_a_refused_row_is_dead_lettered_and_its_batch_is_written(gw, upstreams):
    bad, good = wf(), wf()
    poison(gw, bad)
    c = client(gw)
    ids = []
    for i in range(12):  # inside one flush interval: the refused row lands among good ones
        w = bad if i == 5 else good
        raw = c.chat.completions.with_raw_response.create(**ask(w))
        ids.append((w, raw.headers["x-request-id"]))
    assert len(gw.rows(good, n=11)) == 11
    assert gw.rows(bad, n=0, timeout=0) == []
    letters = [d for d in gw.dead_letters() if d["record_id"] == ids[5][1]]
    assert len(letters) == 1 and "poison" in letters[0]["reason"].lower()
    assert json.loads(letters[0]["record"])["workflow"] == bad
    health = httpx.get(f"{gw.url}/healthz").json()
    assert health["status"] == "degraded" and health["ledger"]["dead_lettered"] >= 1
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert "tiergate_ledger_dead_lettered_total 1.0" in metrics
    assert "tiergate_ledger_degraded 1.0" in metrics


# ---------------------------------------------------------------- /metrics: bounded labels, guarded pages


def test_metrics_labels_are_capped_and_pages_guarded(start_gateway, upstreams):
    admin = "adm-" + uuid.uuid4().hex
    g = start_gateway(
        {"metrics": {"require_admin_key": True, "max_workflows": 2}}, env={"TIERGATE_ADMIN_KEY": admin}
    )
    for path in ("/metrics", "/docs", "/openapi.json"):
        resp = httpx.get(f"{g.url}{path}")
        assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{g.url}{path}", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    c = openai.OpenAI(base_url=g.v1, api_key=admin, max_retries=0)
    names = [f"invented-{i}" for i in range(6)]
    for name in names:
        c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Tiergate-Workflow": name},
        )
    text = httpx.get(f"{g.url}/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    shown = {n for n in names if f'workflow="{n}"' in text}
    assert shown == set(names[:2]) and 'workflow="other"' in text
    assert len(g.wait_records(6)) == 6  # the ledger keeps every name; only the labels are folded


def test_pages_are_open_by_default(start_gateway, upstreams):
    g = start_gateway()
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{g.url}{path}").status_code == 200
