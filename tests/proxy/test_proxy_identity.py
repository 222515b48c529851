"""Workflow identity and conversation stitching, through the real gateway."""

from __future__ import annotations

import json

import openai
import pytest

from gateway.proxy.identity import fingerprint_workflow, normalise_static

SYSTEM = "You are the claims assistant for Acme Insurance. Today is {date}. Session {sid}."
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
    for n in ("lookup", "file_claim")
]


def client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Today is 2026-11-22.", "Today is 2025-01-03."),
        ("Call at 10:30 am.", "Call at 4:05 PM."),
        ("Order 12345 for jane@x.io", "Order 999 for bob@y.com"),
        ("Session 3f2c1a9e-1111-2222-3333-444455556666", "Session 00000000-aaaa-bbbb-cccc-dddddddddddd"),
        ("Monday, March 3rd 2026", "Friday, July 14th 2025"),
        ("ref A1B2C3D4E5F6G7", "ref Z9Y8X7W6V5U4T3"),
    ],
)
def test_volatile_parts_do_not_change_the_fingerprint(a, b):
    assert normalise_static(a) == normalise_static(b)


def test_fingerprint_depends_on_tools_not_their_order():
    msgs = [{"role": "system", "content": "You are the claims assistant for Acme."}]
    name, fp = fingerprint_workflow(msgs, TOOLS)
    assert name.startswith("claims-acme-insurance") or name.startswith("claims-acme")
    assert fingerprint_workflow(msgs, list(reversed(TOOLS)))[1] == fp
    assert fingerprint_workflow(msgs, TOOLS[:1])[1] != fp
    other = [{"role": "system", "content": "You are a poet."}]
    assert fingerprint_workflow(other, TOOLS)[1] != fp


def test_workflow_from_header_metadata_and_fingerprint(start_gateway, upstreams):
    gw = start_gateway()
    c = client(gw)
    user = {"role": "user", "content": "hi"}
    r1 = c.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[user],
        extra_headers={"X-Tiergate-Workflow": "from-header"},
        metadata={"workflow": "ignored-because-header-wins"},
    )
    assert r1.headers["x-tiergate-workflow"] == "from-header"
    r2 = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[user], metadata={"workflow": "from-meta"}
    )
    assert r2.headers["x-tiergate-workflow"] == "from-meta"
    # tiergate's own metadata is not forwarded to the provider
    assert "metadata" not in upstreams["frontier"].log()[-1]["body"]
    names = set()
    for day, sid in (("2026-11-22", "A1"), ("2026-12-01", "B777")):
        sys_msg = {"role": "system", "content": SYSTEM.format(date=day, sid=sid)}
        r = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=[sys_msg, user], tools=TOOLS)
        names.add(r.headers["x-tiergate-workflow"])
    assert len(names) == 1 and next(iter(names)).startswith("claims-acme-insurance-")
    rows = gw.wait_records(4)
    assert [r["workflow"] for r in rows][:2] == ["from-header", "from-meta"]


def run_conversation(c, turns: int, *, extra_headers=None, tools=False) -> list[str]:
    messages = [{"role": "system", "content": "You book trains."}]
    convs = []
    for t in range(turns):
        messages.append({"role": "user", "content": f"turn {t}"})
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=messages,
            extra_headers=extra_headers or {},
            **({"tools": TOOLS} if tools else {}),
        )
        convs.append(raw.headers["x-tiergate-conversation"])
        msg = raw.parse().choices[0].message
        echoed = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            echoed["tool_calls"] = [tc.model_dump() for tc in msg.tool_calls]
            messages.append(echoed)
            messages.append(
                {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": json.dumps({"ok": True})}
            )
        else:
            messages.append(echoed)
    return convs


def test_stitching_joins_turns_and_separates_conversations(start_gateway, upstreams):
    gw = start_gateway()
    c = client(gw)
    upstreams["frontier"].script({}, {"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}, {}, {})
    a = run_conversation(c, 4, tools=True)
    b = run_conversation(c, 2)
    assert len(set(a)) == 1 and len(set(b)) == 1 and a[0] != b[0]
    rows = gw.wait_records(6)
    assert [r["turn"] for r in rows if r["conversation"] == a[0]] == [1, 2, 3, 4]
    assert [r["turn"] for r in rows if r["conversation"] == b[0]] == [1, 2]


def test_streamed_replies_stitch_too(start_gateway):
    gw = start_gateway()
    c = client(gw)
    messages = [{"role": "user", "content": "first"}]
    convs = []
    for t in range(3):
        with c.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=messages, stream=True
        ) as r:
            convs.append(r.headers["x-tiergate-conversation"])
            text = ""
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"]:
                        text += chunk["choices"][0]["delta"].get("content") or ""
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": f"next {t}"}]
    assert len(set(convs)) == 1


def test_explicit_conversation_header(start_gateway):
    gw = start_gateway()
    c = client(gw)
    convs = run_conversation(c, 2, extra_headers={"X-Tiergate-Conversation": "conv-42"})
    assert convs == ["conv-42", "conv-42"]
    rows = gw.wait_records(2)
    assert [r["turn"] for r in rows] == [1, 2]


PROCEDURE = "You are the support assistant of Acme Shop.\nFind out what the customer needs and help them."


def _step_request(step: str, *, one_message: bool) -> list[dict]:
    if one_message:
        system = f"{PROCEDURE}\nCurrent step: {step}.\nToday's date: 2026-12-0{len(step) % 9 + 1}.\n"
        return [{"role": "system", "content": system + f"The customer's name is {step.title()} Byron."}]
    return [
        {"role": "system", "content": PROCEDURE + "\nCustomer name: Ada Lovelace."},
        {"role": "system", "content": f"Now: {step}. Do what this step says, nothing else."},
    ]


@pytest.mark.parametrize("one_message", [False, True])
def test_per_step_system_text_does_not_split_the_workflow(one_message):
    names = {
        fingerprint_workflow(_step_request(step, one_message=one_message), TOOLS)
        for step in ("ask_intent", "lookup_order", "goodbye", "handover")
    }
    assert len(names) == 1, names
    assert next(iter(names))[0].startswith("support-acme-shop-")
    other = [{"role": "system", "content": "You are the billing assistant of Acme Shop.\nRefund orders."}]
    assert fingerprint_workflow(other, TOOLS)[1] != next(iter(names))[1]


def test_auto_name_is_the_same_in_another_process():
    import subprocess
    import sys

    msgs = _step_request("ask_intent", one_message=False)
    code = (
        "import json,sys; from gateway.proxy.identity import fingerprint_workflow as f; "
        "print(json.dumps(f(json.loads(sys.argv[1]), json.loads(sys.argv[2]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(msgs), json.dumps(TOOLS)], capture_output=True, check=True, text=True
    ).stdout
    assert tuple(json.loads(out)) == fingerprint_workflow(msgs, TOOLS)


def test_stitched_turns_inherit_the_first_turns_workflow(start_gateway):
    """Turn 1 names the workflow; later turns without the header (or with a new step) stay in it."""
    gw = start_gateway()
    c = client(gw)
    messages = [{"role": "system", "content": "You book trains."}, {"role": "user", "content": "hi"}]
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, extra_headers={"X-Tiergate-Workflow": "trains"}
    )
    assert raw.headers["x-tiergate-workflow"] == "trains"
    messages += [{"role": "assistant", "content": raw.parse().choices[0].message.content}]
    messages += [{"role": "system", "content": "Step: confirm."}, {"role": "user", "content": "ok"}]
    raw2 = c.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    assert raw2.headers["x-tiergate-workflow"] == "trains"
    assert raw2.headers["x-tiergate-conversation"] == raw.headers["x-tiergate-conversation"]
    rows = gw.wait_records(2)
    assert [(r["workflow"], r["turn"]) for r in rows] == [("trains", 1), ("trains", 2)]


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ({"extra_headers": {"X-Tiergate-Workflow": "caf%C3%A9"}}, "café"),
        ({"extra_headers": {"X-Tiergate-Workflow": "UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E"}}, "日本語"),
        ({"metadata": {"workflow": "日本語"}}, "日本語"),
        ({"metadata": {"workflow": "café"}}, "café"),
    ],
)
def test_unicode_workflow_names_are_stored_and_echoed_encoded(start_gateway, sent, shown):
    from urllib.parse import unquote

    gw = start_gateway()
    raw = client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **sent
    )
    assert raw.status_code == 200
    header = raw.headers["x-tiergate-workflow"]
    assert header.isascii() and unquote(header) == shown
    assert gw.wait_records(1)[-1]["workflow"] == shown


@pytest.mark.parametrize(
    "sent",
    [
        {"extra_headers": {"X-Tiergate-Workflow": "a%0D%0AX-Evil: 1"}},
        {"extra_headers": {"X-Tiergate-Workflow": "bad%E6"}},
        {"metadata": {"workflow": "line\nbreak"}},
        {"metadata": {"workflow": "nul\x00"}},
    ],
)
def test_control_characters_in_a_workflow_name_are_refused_before_the_upstream(start_gateway, upstreams, sent):
    gw = start_gateway()
    before = len(upstreams["frontier"].log())
    with pytest.raises(openai.BadRequestError) as err:
        client(gw).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **sent)
    assert err.value.status_code == 400
    body = err.value.response.json()["error"]
    assert body["type"] == "invalid_request_error" and "workflow" in body["message"].lower()
    assert len(upstreams["frontier"].log()) == before


def test_a_key_bound_to_a_workflow_cannot_write_another(start_gateway, upstreams):
    import httpx

    gw = start_gateway(env={"TIERGATE_ADMIN_KEY": "admin-secret-1"})
    made = httpx.post(
        f"{gw.url}/api/keys",
        json={"name": "support-bot", "workflow": "support"},
        headers={"Authorization": "Bearer admin-secret-1"},
    ).json()
    bound = openai.OpenAI(base_url=gw.v1, api_key=made["key"], max_retries=0)
    before = len(upstreams["frontier"].log())
    for sent in ({"extra_headers": {"X-Tiergate-Workflow": "billing"}}, {"metadata": {"workflow": "billing"}}):
        with pytest.raises(openai.PermissionDeniedError, match="bound to the workflow `support`"):
            bound.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], **sent)
    assert len(upstreams["frontier"].log()) == before
    same = bound.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Tiergate-Workflow": "support"}
    )
    assert same.headers["x-tiergate-workflow"] == "support"
    rows = gw.wait_records(1)
    assert {r["workflow"] for r in rows} == {"support"}


def test_a_conversation_id_in_metadata_is_echoed_safely_or_refused(start_gateway, upstreams):
    from urllib.parse import unquote

    gw = start_gateway()
    c = client(gw)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], metadata={"conversation": "会話-1"}
    )
    assert unquote(raw.headers["x-tiergate-conversation"]) == "会話-1"
    before = len(upstreams["frontier"].log())
    with pytest.raises(openai.BadRequestError, match="metadata.conversation"):
        c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], metadata={"conversation": "a\r\nb"}
        )
    assert len(upstreams["frontier"].log()) == before


@pytest.mark.redis
def test_a_turn_on_another_process_inherits_the_workflow_through_redis(start_gateway, redis_url, tmp_path):
    cfg = {"storage": {"url": f"sqlite:///{tmp_path / 'shared.db'}", "redis_url": redis_url}}
    a, b = start_gateway(cfg, name="a"), start_gateway(cfg, name="b")
    messages = [{"role": "system", "content": "You plan trips."}, {"role": "user", "content": "hi"}]
    first = client(a).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, metadata={"workflow": "trips"}
    )
    messages += [{"role": "assistant", "content": first.parse().choices[0].message.content}]
    messages += [{"role": "system", "content": "Step: dates."}, {"role": "user", "content": "next week"}]
    second = client(b).chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    assert second.headers["x-tiergate-workflow"] == "trips"
    assert second.headers["x-tiergate-conversation"] == first.headers["x-tiergate-conversation"]
