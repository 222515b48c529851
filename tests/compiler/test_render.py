"""Conversations from paths: offline determinism, turn rules, tools, node matching, teacher mode, traffic."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from compiler.flowchart import Flowchart, FlowchartError, from_dict
from compiler.formats import load_flowchart
from compiler.paths import enumerate_paths
from compiler.render import match_node, render_offline
from compiler.teacher import render_teacher
from compiler.traffic import load_traffic, merge_conversations

WORKFLOWS = Path(__file__).resolve().parents[2] / "configs" / "workflows"


@pytest.fixture(scope="module")
def travel() -> Flowchart:
    return load_flowchart(WORKFLOWS / "travel-booking.yaml")


def assistant_messages(conv: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in conv["messages"] if m["role"] == "assistant"]


def test_offline_rendering_is_deterministic_per_seed_and_variant(travel: Flowchart) -> None:
    paths = enumerate_paths(travel, max_loops=1).paths
    for path in paths:
        a = render_offline(travel, path, seed=0, variant=3)
        b = render_offline(travel, path, seed=0, variant=3)
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    variants = {json.dumps(render_offline(travel, paths[0], seed=0, variant=v)["messages"]) for v in range(8)}
    assert len(variants) >= 6, "variants must differ in slots or wording"
    assert render_offline(travel, paths[0], seed=1, variant=0) != render_offline(
        travel, paths[0], seed=0, variant=0
    )


def test_every_travel_path_renders_a_well_formed_conversation(travel: Flowchart) -> None:
    for path in enumerate_paths(travel, max_loops=2).paths:
        conv = render_offline(travel, path, seed=5)
        msgs = conv["messages"]
        meta = conv["tiergate"]
        assert msgs[0] == {"role": "system", "content": travel.system_prompt}
        assert sum(m["role"] == "system" for m in msgs) == 1
        assert conv["tools"] == [dict(t) for t in travel.tools]
        assert meta["path_id"] == path.id and meta["workflow"] == "travel-booking"
        assert meta["terminal"] == path.nodes[-1] and meta["outcome"] == travel.nodes[path.nodes[-1]].outcome
        assert set(meta["slots"]) == set(travel.slots)
        assistants = assistant_messages(conv)
        assert len(assistants) == len(meta["nodes"])
        spoken_or_called = [n for n in path.nodes if travel.nodes[n].speaks or travel.nodes[n].kind == "tool"]
        assert meta["nodes"] == spoken_or_called
        assert msgs[1]["role"] == "user", "the user opens (the start node is silent)"
        for prev, cur in zip(msgs[1:], msgs[2:], strict=False):
            assert not (prev["role"] == "user" and cur["role"] == "user")
            if prev.get("tool_calls"):
                assert cur["role"] == "tool" and cur["tool_call_id"] == prev["tool_calls"][0]["id"]
            if cur["role"] == "tool":
                json.loads(cur["content"])  # results are valid JSON after slot filling
        for m in msgs:
            text = m.get("content") or ""
            assert "{" not in text.replace('{"', "").replace("{}", ""), f"unfilled placeholder in {text!r}"


def test_tool_calls_copy_slot_values_typed_by_schema(travel: Flowchart) -> None:
    path = next(p for p in enumerate_paths(travel).paths if p.terminal == "booked")
    conv = render_offline(travel, path, seed=2, variant=1)
    slots = conv["tiergate"]["slots"]
    calls = [m["tool_calls"][0]["function"] for m in assistant_messages(conv) if m.get("tool_calls")]
    assert [c["name"] for c in calls] == ["search_flights", "book_flight"]
    assert json.loads(calls[0]["arguments"]) == {
        "origin": slots["origin"],
        "destination": slots["city"],
        "date": slots["date"],
        "passengers": int(slots["passengers"]),
    }
    user_trip = conv["messages"][3]["content"]
    assert slots["origin"] in user_trip and slots["city"] in user_trip and slots["date"] in user_trip
    assert slots["booking_ref"] in conv["messages"][-1]["content"]


def test_branch_results_override_the_tool_result(travel: Flowchart) -> None:
    path = next(p for p in enumerate_paths(travel).paths if "no_flights" in p.nodes)
    conv = render_offline(travel, path, seed=0)
    results = [m["content"] for m in conv["messages"] if m["role"] == "tool"]
    assert json.loads(results[0]) == {"flights": []}


def test_assistant_may_open_and_silent_terminals_end_quietly(make_chart: Callable[..., Flowchart]) -> None:
    fc = from_dict(
        {
            "name": "hello",
            "system_prompt": "Hi.",
            "start": "s",
            "nodes": {
                "s": {"kind": "start", "say": "Hello, how can I help?"},
                "d": {"kind": "decision"},
                "a": {"kind": "agent", "say": "Here is your balance."},
                "t1": {"kind": "terminal", "outcome": "success"},
                "t2": {"kind": "terminal", "outcome": "abandon", "say": "Bye then."},
            },
            "edges": [
                {"from": "s", "to": "d"},
                {"from": "d", "to": "a", "utterances": ["My balance please"]},
                {"from": "d", "to": "t2", "utterances": ["Nothing, thanks"]},
                {"from": "a", "to": "t1"},
            ],
        }
    )
    first, second = enumerate_paths(fc).paths
    conv = render_offline(fc, first, seed=0)
    assert [m["role"] for m in conv["messages"]] == ["system", "assistant", "user", "assistant"]
    assert conv["tiergate"]["nodes"] == ["s", "a"] and conv["tiergate"]["terminal"] == "t1"
    conv = render_offline(fc, second, seed=0)
    assert conv["messages"][-1] == {"role": "assistant", "content": "Bye then."}
    assert conv["tiergate"]["nodes"] == ["s", "t2"]


def test_rendering_refuses_gaps_and_foreign_paths(
    make_chart: Callable[..., Flowchart], travel: Flowchart
) -> None:
    fc = make_chart([("start", "A"), ("A", "B"), ("B", "T1")], kinds={"T1": "terminal"})
    gap = from_dict(
        {
            **fc.to_dict(),
            "nodes": {
                **fc.to_dict()["nodes"],
                "T1": {"kind": "terminal", "outcome": "success", "say": "end"},
            },
            "edges": [*fc.to_dict()["edges"][:2], {"from": "B", "to": "T1"}],
        }
    )
    path = enumerate_paths(gap).paths[0]
    with pytest.raises(FlowchartError, match="node `B`: edge `B` -> `T1` needs example user `utterances`"):
        render_offline(gap, path, seed=0)
    foreign = enumerate_paths(travel).paths[0]
    with pytest.raises(FlowchartError, match="does not"):
        render_offline(fc, foreign, seed=0)


def test_match_node_maps_every_rendered_turn_back(travel: Flowchart) -> None:
    for path in enumerate_paths(travel, max_loops=1).paths:
        conv = render_offline(travel, path, seed=9, variant=2)
        slots = conv["tiergate"]["slots"]
        got = [match_node(travel, m, slots) for m in assistant_messages(conv)]
        assert got == conv["tiergate"]["nodes"]


def test_match_node_tolerates_wrong_slot_values_and_rejects_noise(travel: Flowchart) -> None:
    slots = {
        "origin": "London",
        "city": "Rome",
        "date": "3 March",
        "passengers": "2",
        "flight": "SK101",
        "price": "89",
        "booking_ref": "BK4Q7Z",
    }
    offer = {
        "role": "assistant",
        "content": "I found flight SK999 from Oslo to Rome on 1 May at 12 EUR per person. "
        "Shall I book it for 2 passenger(s)?",
    }
    assert match_node(travel, offer, slots) == "offer_flight"
    assert match_node(travel, {"role": "assistant", "content": "The weather is lovely today."}, slots) is None
    assert match_node(travel, {"role": "assistant", "content": ""}, slots) is None
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "book_flight", "arguments": '{"flight": "SK1"}'},
            }
        ],
    }
    assert match_node(travel, call, slots) == "book_flight"
    unknown_tool = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "nope", "arguments": "{}"}}],
    }
    assert match_node(travel, unknown_tool, slots) is None
    assert match_node(travel, offer, slots, candidates=["ask_trip", "booked"]) is None


def test_teacher_mode_uses_the_models_and_keeps_tools_exact(travel: Flowchart) -> None:
    seen: list[tuple[str, list[dict[str, Any]]]] = []

    def complete(model: str, messages: list[dict[str, Any]]) -> str:
        seen.append((model, messages))
        return f"[{model} turn {len(seen)}]"

    path = next(p for p in enumerate_paths(travel).paths if p.terminal == "booked")
    conv = render_teacher(travel, path, "teacher-x", "sim-y", seed=4, complete=complete)
    offline_nodes = render_offline(travel, path, seed=4)["tiergate"]["nodes"]
    assert conv["tiergate"]["nodes"] == offline_nodes
    assert conv["tiergate"]["source"] == "teacher"
    assert conv["messages"][0] == {"role": "system", "content": travel.system_prompt}
    texts = [
        m for m in conv["messages"][1:] if m["role"] in ("user", "assistant") and not m.get("tool_calls")
    ]
    assert all(m["content"].startswith("[teacher-x" if m["role"] == "assistant" else "[sim-y") for m in texts)
    calls = [m for m in conv["messages"] if m.get("tool_calls")]
    slots = conv["tiergate"]["slots"]
    assert json.loads(calls[0]["tool_calls"][0]["function"]["arguments"])["destination"] == slots["city"]
    for model, messages in seen:
        joined = json.dumps(messages)
        if model == "sim-y":  # the simulator never sees the flowchart's node instructions
            assert "Greet the customer" not in joined and "Offer the flight" not in joined
        else:
            assert "Your next reply must do this" in messages[0]["content"]
    again = render_teacher(travel, path, "teacher-x", "sim-y", seed=4, complete=lambda m, msgs: "x")
    assert again["tiergate"]["slots"] == slots


def test_traffic_is_normalised_and_deduplicated(travel: Flowchart, tmp_path: Path) -> None:
    path = enumerate_paths(travel).paths[0]
    rendered = [render_offline(travel, path, seed=0, variant=v) for v in range(3)]
    logged = dict(rendered[1])
    logged = {
        "messages": [
            {"role": "system", "content": "A LONG PROCEDURE PROMPT"},
            *[
                {**m, "content": f"  {m['content']}  "} if m["role"] == "user" else m
                for m in rendered[1]["messages"][1:]
            ],
        ],
        "tools": [],
    }
    fresh = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    log = tmp_path / "traffic.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in (logged, fresh, fresh)) + "\n\n")
    loaded = load_traffic(log, travel)
    assert all(c["messages"][0] == {"role": "system", "content": travel.system_prompt} for c in loaded)
    assert all(c["tiergate"]["source"] == "traffic" for c in loaded)
    merged = merge_conversations(rendered, loaded)
    assert len(merged) == 4  # 3 rendered + the fresh one; the logged copy and the repeat are dropped
    assert merged[:3] == rendered


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "line 1: not JSON"),
        ('{"messages": []}', "non-empty `messages`"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "role `robot`"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ],
)
def test_bad_traffic_lines_are_named(travel: Flowchart, tmp_path: Path, line: str, needle: str) -> None:
    log = tmp_path / "bad.jsonl"
    log.write_text(line + "\n")
    with pytest.raises(FlowchartError, match=needle):
        load_traffic(log, travel)


def test_teacher_mode_through_litellm(travel: Flowchart, monkeypatch: pytest.MonkeyPatch) -> None:
    # litellm's own offline answer (`mock_response`) stands in for a provider; the adapter is real.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    path = enumerate_paths(travel).paths[0]
    conv = render_teacher(
        travel,
        path,
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini",
        seed=0,
        completion_kwargs={"mock_response": "Certainly."},
    )
    texts = [
        m["content"]
        for m in conv["messages"][1:]
        if m["role"] in ("user", "assistant") and not m.get("tool_calls")
    ]
    assert texts and set(texts) == {"Certainly."}
    assert conv["tiergate"]["nodes"] == render_offline(travel, path, seed=0)["tiergate"]["nodes"]


def test_rendering_is_identical_across_processes(travel: Flowchart) -> None:
    """Path ids, slot picks and call ids must not depend on Python's per-process hash seed."""
    import os
    import subprocess
    import sys

    script = (
        "import json; from compiler.formats import load_flowchart; from compiler.paths import enumerate_paths; "
        "from compiler.render import render_offline; "
        f"fc = load_flowchart({str(WORKFLOWS / 'travel-booking.yaml')!r}); "
        "print(json.dumps([render_offline(fc, p, seed=3, variant=1) for p in enumerate_paths(fc).paths], sort_keys=True))"
    )
    root = str(Path(__file__).resolve().parents[2])
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root},
        ).stdout
        for seed in ("1", "2")
    }
    local = json.dumps(
        [render_offline(travel, p, seed=3, variant=1) for p in enumerate_paths(travel).paths], sort_keys=True
    )
    assert outputs == {local + "\n"}


def test_novel_slot_values_keep_the_shape_and_are_never_listed(travel: Flowchart) -> None:
    import random

    from compiler.render import novel_value, pick_slots

    listed = {str(v) for values in travel.slots.values() for v in values}
    rng = random.Random(3)
    for values in travel.slots.values():
        for value in values:
            new = novel_value(str(value), values, rng, avoid=listed)
            assert new not in listed and len(new.split()) == len(str(value).split()), (value, new)
            for a, b in zip(str(value).split(), new.split(), strict=True):
                assert a.isdigit() == b.isdigit() and a[0].isupper() == b[0].isupper(), (value, new)
                if a.isdigit():
                    assert len(a) == len(b) and b[0] != "0"
    assert pick_slots(travel, random.Random(1)) == pick_slots(travel, random.Random(1), 0.0)  # off by default
    novel = pick_slots(travel, random.Random(1), 1.0)
    assert not set(novel.values()) & listed and set(novel) == set(travel.slots)


def test_novel_slot_share_renders_consistent_conversations(travel: Flowchart) -> None:
    path = max(enumerate_paths(travel, max_loops=1).paths, key=lambda p: len(p.nodes))
    conv = render_offline(travel, path, seed=0, variant=1, novel_share=1.0)
    assert conv == render_offline(travel, path, seed=0, variant=1, novel_share=1.0)  # deterministic
    slots = conv["tiergate"]["slots"]
    call = next(m for m in conv["messages"] if m.get("tool_calls"))
    args = json.loads(call["tool_calls"][0]["function"]["arguments"])
    assert args["origin"] == slots["origin"] and args["destination"] == slots["city"]
    assert args["passengers"] == int(slots["passengers"])
    user = next(m["content"] for m in conv["messages"] if m["role"] == "user" and slots["city"] in m["content"])
    assert slots["origin"] in user  # the user says the unlisted values the call copies
