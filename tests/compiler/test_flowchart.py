"""The YAML format and validation: loading, round trips, and every class of problem named."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from compiler.flowchart import Flowchart, FlowchartError, check, validate
from compiler.formats import load_flowchart
from compiler.formats.yaml import dump_yaml, loads_yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "configs" / "workflows"


def problems(fc: Flowchart, kind: str | None = None) -> list[str]:
    return [str(i) for i in validate(fc) if kind is None or i.kind == kind]


def test_travel_booking_loads_and_is_clean(make_chart: Callable[..., Flowchart]) -> None:
    fc = load_flowchart(WORKFLOWS / "travel-booking.yaml")
    assert validate(fc) == []
    assert len(fc.nodes) == 15
    assert len(fc.decision_hubs) >= 3
    assert {fc.nodes[t].outcome for t in fc.terminals} == {"success", "abandon", "escalate"}
    assert {t["function"]["name"] for t in fc.tools} == {"search_flights", "book_flight"}
    assert "search" not in fc.system_prompt.lower(), "the runtime prompt must not spell out the procedure"
    assert [e.target for e in fc.out_edges("offer_answer")] == ["book_flight", "goodbye", "handover"]


def test_insurance_claims_is_at_paper_scale(make_chart: Callable[..., Flowchart]) -> None:
    fc = load_flowchart(WORKFLOWS / "insurance-claims.yaml")
    assert validate(fc) == []
    assert len(fc.nodes) >= 50
    assert len(fc.decision_hubs) >= 6
    assert fc.tools
    from compiler.flowchart import strongly_connected

    assert any(len(c) > 1 for c in strongly_connected(fc)), "the example must contain loops"


def test_yaml_round_trip_and_digest_is_format_independent(tmp_path: Path) -> None:
    fc = load_flowchart(WORKFLOWS / "travel-booking.yaml")
    text = dump_yaml(fc)
    again = loads_yaml(text, source="elsewhere.yaml")
    assert again == fc
    assert again.digest() == fc.digest()
    (tmp_path / "copy.yml").write_text(text)
    assert load_flowchart(tmp_path / "copy.yml").digest() == fc.digest()
    changed = loads_yaml(text.replace("Be brief and polite.", "Be brief."))
    assert changed.digest() != fc.digest()


def test_shorthands_are_accepted() -> None:
    fc = loads_yaml(
        """
name: s
nodes:
  start: {kind: start, text: go}
  hello: Greet the user
  lookup: {kind: tool, tool: find, args: {q: "{q}"}, result: {found: true}}
  T: {kind: terminal, outcome: success, say: Bye}
edges:
  - {from: start, to: hello, utterances: hi}
  - {from: hello, to: lookup, utterances: ["{q} please"]}
  - {from: lookup, to: T}
slots: {q: x}
tools: [{name: find, parameters: {type: object, properties: {q: {type: string}}}}]
"""
    )
    assert fc.start == "start"  # found from the only start node
    assert fc.nodes["hello"].kind == "agent" and fc.nodes["hello"].text == "Greet the user"
    assert fc.nodes["lookup"].result == '{"found": true}'
    assert fc.nodes["T"].say == ("Bye",)
    assert fc.tools[0]["type"] == "function"
    assert fc.slots == {"q": ("x",)}
    assert problems(fc, "structure") == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nodes: [1, 2", "not valid YAML at line"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("name: x\nnodes: {}\n", "`nodes` must be a non-empty mapping"),
        ("nodez: {}\n", "unknown key `nodez`"),
        ("nodes: {a: {kind: robot}}\n", "node `a`: unknown kind `robot`"),
        ("nodes: {a: {kind: terminal, outcome: great}}\n", "node `a`: unknown outcome `great`"),
        ("nodes: {a: {kind: agent, sayy: hi}}\n", "node `a`: unknown key `sayy`"),
        ("nodes: {a: {kind: start}}\nedges: [{from: a}]\n", "edge #1 must be a mapping with `from` and `to`"),
        ("nodes: {a: {kind: start}}\nedges: [{from: a, to: a, when: x}]\n", "unknown key `when`"),
        ("nodes: {a: {kind: agent}, b: {kind: agent}}\n", "name the start node"),
        ("nodes: {a: {kind: start}}\nslots: {city: []}\n", "slot `city` has no values"),
        ("nodes: {a: {kind: start}}\ntools: [{type: function}]\n", "tool #1 must be an OpenAI tool schema"),
        ("nodes: {a: {kind: start, say: {x: 1}}}\n", "`say` must be a string or a list"),
    ],
)
def test_malformed_yaml_is_refused_with_the_place_named(text: str, needle: str) -> None:
    with pytest.raises(FlowchartError) as err:
        loads_yaml(text, source="bad.yaml")
    assert needle in str(err.value)
    assert "`bad.yaml`" in str(err.value)


def test_load_refuses_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FlowchartError, match="unknown flowchart format `.txt`"):
        load_flowchart(tmp_path / "chart.txt")
    with pytest.raises(FlowchartError, match="cannot read the flowchart"):
        load_flowchart(tmp_path / "missing.yaml")


def test_validation_names_unknown_edge_target(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "T1")])
    broken = dataclasses.replace(fc, edges=(*fc.edges, fc.edges[0].__class__("A", "nowhere")))
    assert "node `A`: edge `A` -> `nowhere` points to an unknown node `nowhere`" in problems(broken)


def test_validation_names_unreachable_node(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "T1"), ("B", "T1")])
    assert any(p.startswith("node `B`: unreachable from the start node `start`") for p in problems(fc))


def test_validation_names_dead_end_that_is_not_terminal(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "T1"), ("A", "B")])
    assert any(p.startswith("node `B`: a dead end: `agent` node with no outgoing edge") for p in problems(fc))


def test_validation_names_loop_with_no_exit(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "D1"), ("D1", "T1"), ("D1", "B"), ("B", "C"), ("C", "B")])
    found = [p for p in problems(fc) if "a loop with no exit" in p]
    assert found == ["node `B`: a loop with no exit (`B` -> `C`); add an edge out of the loop"]
    self_loop = make_chart([("start", "A"), ("A", "T1"), ("A", "B"), ("B", "B")])
    assert any(p.startswith("node `B`: a loop with no exit") for p in problems(self_loop))
    # A loop with an exit is fine.
    ok = make_chart([("start", "A"), ("A", "B"), ("B", "A"), ("B", "T1")])
    assert problems(ok) == []


def test_validation_names_missing_utterance_behind_a_decision(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "D1"), ("D1", "B"), ("D1", "T1"), ("B", "T2")])
    edges = list(fc.edges)
    edges[2] = edges[2].__class__("D1", "B", condition="yes")  # no utterances
    fc = dataclasses.replace(fc, edges=tuple(edges))
    synth = problems(fc, "synthesis")
    assert synth == [
        "node `D1`: edge `D1` -> `B` needs example user `utterances` (the user answers `A` there)"
    ]
    assert problems(fc, "structure") == []


def test_validation_of_terminals_tools_and_slots() -> None:
    fc = loads_yaml(
        """
start: s
slots: {city: [Rome]}
tools: [{type: function, function: {name: search, parameters: {type: object, properties: {city: {type: string}},
         required: [city]}}}]
nodes:
  s: {kind: start}
  a: {kind: agent, say: ["Going to {town}?"]}
  t1: {kind: tool, tool: search, args: {place: "{city}"}}
  t2: {kind: tool, tool: book}
  t3: {kind: tool}
  e: {kind: terminal}
  f: {kind: terminal, outcome: success}
edges:
  - {from: s, to: a}
  - {from: a, to: t1, utterances: ["yes"]}
  - {from: t1, to: t2}
  - {from: t2, to: t3}
  - {from: t3, to: e}
  - {from: e, to: f}
"""
    )
    found = problems(fc)
    assert "node `e`: a terminal with outgoing edges (to `f`); terminals end the conversation" in found
    assert "node `e`: a terminal without `outcome`; set it to success, abandon, escalate or handoff" in found
    assert "node `t1`: argument `place` is not a parameter of tool `search`; fix the name" in found
    assert "node `t1`: tool `search` requires argument `city`; add it to `args`" in found
    assert any(p.startswith("node `t2`: calls tool `book`, which is not in `tools`") for p in found)
    assert "node `t3`: a tool node without `tool`; name the tool it calls" in found
    assert "node `a`: placeholder `{town}` names no slot; declare `town` under `slots`" in found


def test_check_raises_with_every_problem_listed(make_chart: Callable[..., Flowchart]) -> None:
    fc = make_chart([("start", "A"), ("A", "T1"), ("A", "B"), ("C", "T1")])
    with pytest.raises(FlowchartError) as err:
        check(fc)
    message = str(err.value)
    assert "2 problem(s)" in message and "`B`" in message and "`C`" in message
    assert check(make_chart([("start", "A"), ("A", "T1")])).name == "t"


def test_the_documented_worked_example_is_valid_and_renders_as_shown() -> None:
    from compiler.paths import enumerate_paths
    from compiler.render import render_offline

    doc = (ROOT / "docs" / "flowcharts.md").read_text()
    section = doc.split("## Worked example", 1)[1]
    fc = loads_yaml(section.split("```yaml", 1)[1].split("```", 1)[0], source="docs/flowcharts.md")
    assert validate(fc) == []
    paths = enumerate_paths(fc).paths
    assert len(paths) == 3
    booked = next(p for p in paths if p.terminal == "booked")
    conv = render_offline(fc, booked, seed=0)
    shown = section.split("```json", 1)[1].split("```", 1)[0]
    for message in conv["messages"]:
        if message["role"] in ("user", "assistant") and message["content"]:
            assert message["content"] in shown
    assert conv["tiergate"]["nodes"] == ["offer", "book", "booked"]


def test_an_unquoted_yes_in_a_flow_list_is_refused_not_read_as_true() -> None:
    # `[Yes, please book it.]` is two YAML items: the boolean True and "please book it."
    text = (
        "name: t\nstart: a\nnodes:\n  a: {kind: agent, text: Hi}\n  b: {kind: terminal, outcome: success}\n"
        "edges:\n  - {from: a, to: b, utterances: [Yes, please book it.]}\n"
    )
    with pytest.raises(FlowchartError, match=r"holds `True`, which YAML read as a boolean; quote that item"):
        loads_yaml(text, "t.yaml")
