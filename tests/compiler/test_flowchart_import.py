"""Mermaid and DOT importers, and the `flowchart check|convert` commands, on good and malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from compiler.flowchart import Flowchart, FlowchartError, validate
from compiler.flowchart_cli import register_flowchart
from compiler.formats import load_flowchart
from compiler.formats.dot import parse_dot
from compiler.formats.mermaid import parse_mermaid
from compiler.formats.yaml import dump_yaml, loads_yaml
from compiler.paths import count_paths

WORKFLOWS = Path(__file__).resolve().parents[2] / "configs" / "workflows"


def edges_of(fc: Flowchart) -> list[tuple[str, str, str]]:
    return [(e.source, e.target, e.condition) for e in fc.edges]


# ----------------------------------------------------------------------------- Mermaid


def test_mermaid_shapes_and_kinds() -> None:
    fc = parse_mermaid(
        """
%% comment line
flowchart LR
    S([Start]) --> A[Ask for the city]
    A --> L[[Search flights]]
    L --> D{Found?}
    D -->|yes| O(Offer the flight)
    D -->|no| H{{Retry?}}
    H --> A
    H --> X((Customer gives up))
    O --> E([Booking done])
    O --> Q>Flag for review]
    Q --> R[(Store)] --> F[/Escalate to a human/]
""",
        name="m",
    )
    kinds = {n.id: n.kind for n in fc.nodes.values()}
    assert kinds == {
        "S": "start",
        "A": "agent",
        "L": "tool",
        "D": "decision",
        "O": "agent",
        "H": "decision",
        "X": "terminal",
        "E": "terminal",
        "Q": "agent",
        "R": "agent",
        "F": "terminal",
    }
    assert fc.start == "S"
    assert fc.nodes["L"].tool == "search_flights" and fc.nodes["A"].text == "Ask for the city"
    assert {t: fc.nodes[t].outcome for t in fc.terminals} == {"X": "abandon", "E": "success", "F": "escalate"}
    assert [t["function"]["name"] for t in fc.tools] == ["search_flights"]
    assert validate(fc) and all(i.kind == "synthesis" for i in validate(fc))


@pytest.mark.parametrize(
    ("link", "label"),
    [
        ("-->", ""),
        ("---", ""),
        ("-.->", ""),
        ("==>", ""),
        ("-- yes -->", "yes"),
        ("--yes-->", "yes"),
        ("-->|yes|", "yes"),
        ('-->|"yes, sure"|', "yes, sure"),
        ("-. maybe later .->", "maybe later"),
        ("== re-try ==>", "re-try"),
        ("-- re-try -->", "re-try"),
    ],
)
def test_mermaid_link_syntaxes(link: str, label: str) -> None:
    fc = parse_mermaid(f"graph TD\n  A[Start here] {link} B([Done])\n")
    assert edges_of(fc) == [("A", "B", label)]


def test_mermaid_chains_ampersands_semicolons_and_ignored_lines() -> None:
    fc = parse_mermaid(
        """---
title: chained
---
graph TB
    classDef hot fill:#f00
    subgraph one
    A[Begin] --> B --> C:::hot
    end
    B & C --> D{"Pick one"}; D -- left --> E([End left]); D -- right --> F([End right])
    style A fill:#fff
    linkStyle 0 stroke:#f00
    click A callback
"""
    )
    assert fc.name == "chained"
    assert edges_of(fc) == [
        ("A", "B", ""),
        ("B", "C", ""),
        ("B", "D", ""),
        ("C", "D", ""),
        ("D", "E", "left"),
        ("D", "F", "right"),
    ]
    assert fc.nodes["D"].text == "Pick one" and fc.nodes["D"].kind == "decision"
    assert count_paths(fc, 0) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('',
         '`bad.mmd`: empty Mermaid file; it must start with `flowchart TD` (or `graph LR`, ...)'),
        ('sequenceDiagram\n A->>B: hi\n',
         '`bad.mmd` line 1: expected a `flowchart` or `graph` header, got `sequenceDiagram`; only Mermaid flowcharts can be imported'),
        ('flowchart TD\n  A[open --> B\n',
         '`bad.mmd` line 2: the label `[` is never closed; add `]`'),
        ('flowchart TD\n  A["open] --> B\n',
         '`bad.mmd` line 2: a quoted string is never closed; add `"`'),
        ('flowchart TD\n  A{{Pick\n one} --> B\n',
         '`bad.mmd` line 2: the label `{` is never closed; add `}`'),
        ('flowchart TD\n  A{{Pick}]\n',
         '`bad.mmd` line 2: expected `}` to close the label of node `A`, got `]`'),
        ('flowchart TD\n  A --> \n',
         '`bad.mmd` line 2: expected a target node after the link `-->`, got the end of the chart'),
        ('flowchart TD\n  A ~> B\n',
         '`bad.mmd` line 2: unexpected `~> B`; check the link and label syntax'),
        ('flowchart TD\n  A -- text B\n',
         '`bad.mmd` line 2: the link text after `--` is never closed; add the rest of the arrow, such as `-->`'),
        ('flowchart TD\n  A --> B %% why\n',
         '`bad.mmd` line 2: a `%%` comment must be on a line of its own (Mermaid ignores only whole-line comments)'),
        ('flowchart TD\n  A --> end\n',
         '`bad.mmd` line 2: expected a target node after the link `-->`, got the keyword `end`; a node cannot be called `end` (try `End`)'),
        ('flowchart TD\n  subgraph S\n  A --> B\n',
         '`bad.mmd` line 2: the subgraph `S` is never closed; add `end` after its last line'),
        ('flowchart TD\n  A --> B\n  end\n',
         '`bad.mmd` line 3: `end` without an open `subgraph`; remove it or open a subgraph'),
        ('flowchart TD\n  A --> B\n  linkStyle 1 stroke:red\n',
         '`bad.mmd` line 3: `linkStyle 1` names no link: 1 link(s) come before it, numbered from 0'),
        ('flowchart TD\n  A@{ shape: blob }\n',
         "`bad.mmd` line 2: node `A`: no such shape `blob`; see Mermaid's shape list (for example `rect`, `rounded`, `stadium`, `diamond`, `hex`, `subproc`, `circle`)"),
        ('flowchart TD\n  A[]\n',
         '`bad.mmd` line 2: expected a label, got `]`'),
        ('flowchart\n  A -->|yes B\n',
         '`bad.mmd` line 2: the link text `|` is never closed; add `|`'),
        ('---\ntitle: x\nflowchart TD\n',
         '`bad.mmd` line 1: front matter `---` is never closed; add a closing `---`'),
        ('flowchart TD\n%% nothing\n',
         '`bad.mmd`: the flowchart has no nodes; draw at least a start and an end'),
    ],
)
def test_mermaid_malformed_input_names_the_line(text: str, message: str) -> None:
    with pytest.raises(FlowchartError) as err:
        parse_mermaid(text, source="bad.mmd")
    assert str(err.value) == message


def test_mermaid_dead_end_becomes_a_handoff_with_a_note() -> None:
    fc = parse_mermaid(
        "flowchart TD\n S([Start]) --> A[Ask] --> B[Continue in the billing chart]\n A --> E([Done])\n",
        source="m.mmd",
    )
    assert fc.nodes["B"].kind == "terminal" and fc.nodes["B"].outcome == "handoff"
    assert fc.notes == (
        "`m.mmd`: node `B` has no way out and not drawn as an end; imported as hand-off terminal(s) "
        "(outcome `handoff`): mark real ends with an oval/stadium shape or an ending label",
    )
    assert [i for i in validate(fc) if i.kind == "structure"] == []


# --------------------------------------------------------------------------------- DOT


def test_dot_shapes_labels_defaults_and_explicit_attributes() -> None:
    fc = parse_dot(
        """
/* block comment */
digraph support {
  graph [rankdir=LR]; rankdir = LR
  node [shape=box fontname="Arial"]
  edge [color=grey]
  # a hash comment
  s [shape=ellipse label="Customer writes in"]
  ask [label="Ask for the " + "order number"]
  look [shape=component label="Get order"]
  ok [shape=diamond label=<Found <b>it</b>?>]
  fix [label="Explain the policy", tool=none_here, kind=agent]
  good [shape=oval label="Refund issued"]
  bad [shape=doublecircle label="Transfer to a human" outcome=escalate]
  s -> ask -> look -> ok
  ok -> good [label="yes"]
  ok:e -> fix [xlabel="no"]
  fix -> {bad good}
}
""",
        source="s.dot",
    )
    assert fc.name == "support"
    kinds = {n.id: n.kind for n in fc.nodes.values()}
    assert kinds == {
        "s": "start",
        "ask": "agent",
        "look": "tool",
        "ok": "decision",
        "fix": "agent",
        "good": "terminal",
        "bad": "terminal",
    }
    assert fc.nodes["ask"].text == "Ask for the order number"
    assert fc.nodes["ok"].text == "Found it?"
    assert fc.nodes["look"].tool == "get_order"
    assert fc.nodes["bad"].outcome == "escalate" and fc.nodes["good"].outcome == "success"
    assert edges_of(fc) == [
        ("s", "ask", ""),
        ("ask", "look", ""),
        ("look", "ok", ""),
        ("ok", "good", "yes"),
        ("ok", "fix", "no"),
        ("fix", "good", ""),  # Graphviz walks `{bad good}` in the order the nodes were created
        ("fix", "bad", ""),
    ]
    assert [i for i in validate(fc) if i.kind == "structure"] == []


def test_dot_undirected_graph_and_default_ellipses() -> None:
    fc = parse_dot("strict graph { a -- b -- c; b [shape=diamond]; b -- d }")
    assert fc.start == "a" and fc.nodes["a"].kind == "start"
    assert fc.nodes["b"].kind == "decision"
    assert fc.terminals == ("c", "d")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('',
         '`bad.dot` line 1: expected `digraph` or `graph`, got `an empty file`; a DOT file starts with `digraph NAME {`'),
        ('flowchart TD',
         '`bad.dot` line 1: expected `digraph` or `graph`, got `flowchart`; a DOT file starts with `digraph NAME {`'),
        ('digraph {\n a -> b\n',
         '`bad.dot` line 2: the graph body is never closed; add `}`'),
        ('digraph {\n a -- b }',
         '`bad.dot` line 2: `--` in a `digraph`; use `->` for directed edges'),
        ('graph {\n\n a -> b }',
         '`bad.dot` line 3: `->` in an undirected `graph`; use `digraph` or `--`'),
        ('digraph { a -> ; }',
         '`bad.dot` line 1: the edge has no target; expected a node after `->`'),
        ('digraph { a [label="x] }',
         '`bad.dot` line 1: a quoted string is never closed; add the closing `"`'),
        ('digraph { a [label=<x<b>y</b> ] }',
         '`bad.dot` line 1: an HTML label `<...>` is never closed; add the `>`'),
        ('digraph { } extra',
         '`bad.dot` line 1: unexpected `extra` after the closing `}`; one graph per file'),
        ('digraph { }',
         '`bad.dot`: the graph has no nodes; draw at least a start and an end'),
        ('digraph { a [kind=robot] }',
         '`bad.dot` line 1: node `a` has unknown kind `robot`; use one of start, agent, tool, decision, terminal'),
        ('digraph { a -> b; b [outcome=great] }',
         '`bad.dot` line 1: node `b` has unknown outcome `great`; use one of success, abandon, escalate, handoff'),
        ('digraph {\n a /* never closed\n}',
         '`bad.dot` line 2: a `/*` comment is never closed; add `*/`'),
    ],
)
def test_dot_malformed_input_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(FlowchartError) as err:
        parse_dot(text, source="bad.dot")
    assert str(err.value) == message


def test_example_drawings_load_and_round_trip() -> None:
    for file in ("password-reset.mmd", "refund-request.dot"):
        fc = load_flowchart(WORKFLOWS / file)
        assert [i for i in validate(fc) if i.kind == "structure"] == []
        assert len(fc.decision_hubs) >= 2 and len(fc.terminals) == 3
        assert loads_yaml(dump_yaml(fc)) == fc


# --------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register_flowchart(app)

    @app.callback()
    def _root() -> None:
        """Keep `flowchart` a sub-command even when it is the only one."""

    return app


@pytest.mark.parametrize(
    "file", ["travel-booking.yaml", "insurance-claims.yaml", "password-reset.mmd", "refund-request.dot"]
)
def test_check_prints_the_summary_for_every_format(cli: typer.Typer, file: str) -> None:
    result = CliRunner().invoke(cli, ["flowchart", "check", str(WORKFLOWS / file)])
    assert result.exit_code == 0, result.output
    for word in ("nodes:", "edges:", "decision hubs:", "terminals:", "paths:", "coverage:"):
        assert word in result.output
    if file == "travel-booking.yaml":
        assert "paths:          5 with loops unrolled 0x; 14 with loops unrolled 1x" in result.output
        assert "TODO" not in result.output


def test_check_fails_on_structure_and_optionally_on_todo(cli: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dot"
    bad.write_text("digraph { s [kind=start]; s -> a -> b; a -> s; b [kind=agent] }\n")
    result = CliRunner().invoke(cli, ["flowchart", "check", str(bad)])
    assert result.exit_code == 1
    assert "ERROR   node `b`: a dead end: `agent` node with no outgoing edge" in result.stdout
    assert result.stderr.count("\n") == 1 and "structural problem(s)" in result.stderr
    todo = CliRunner().invoke(cli, ["flowchart", "check", str(WORKFLOWS / "password-reset.mmd"), "--strict"])
    assert todo.exit_code == 1 and "TODO item(s)" in todo.stderr


def test_check_bad_file_is_one_line_exit_2(cli: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("nodes: [1, 2\n")
    result = CliRunner().invoke(cli, ["flowchart", "check", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: `") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["flowchart", "check", str(tmp_path / "nope.dot")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_convert_round_trips_through_yaml(cli: typer.Typer, tmp_path: Path) -> None:
    for file in ("password-reset.mmd", "refund-request.dot", "travel-booking.yaml"):
        out = tmp_path / (Path(file).stem + ".yaml")
        result = CliRunner().invoke(
            cli, ["flowchart", "convert", str(WORKFLOWS / file), "--to", "yaml", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        original = load_flowchart(WORKFLOWS / file)
        converted = load_flowchart(out)
        assert converted == original and converted.digest() == original.digest()
    printed = CliRunner().invoke(cli, ["flowchart", "convert", str(WORKFLOWS / "refund-request.dot")])
    assert printed.exit_code == 0 and loads_yaml(printed.stdout) == load_flowchart(
        WORKFLOWS / "refund-request.dot"
    )
    wrong = CliRunner().invoke(
        cli, ["flowchart", "convert", str(WORKFLOWS / "refund-request.dot"), "--to", "json"]
    )
    assert wrong.exit_code == 2 and "only target is `yaml`" in wrong.stderr


@pytest.mark.parametrize(
    "file", sorted(p.name for p in (Path(__file__).parent / "charts").iterdir() if p.suffix in (".mmd", ".dot"))
)
def test_check_exits_0_on_every_corpus_drawing(cli: typer.Typer, file: str) -> None:
    """The corpus the reference parsers accept (see test_*_reference.py): `check` passes, listing TODOs."""
    result = CliRunner().invoke(cli, ["flowchart", "check", str(Path(__file__).parent / "charts" / file)])
    assert result.exit_code == 0, result.output
    assert "ERROR" not in result.output


def test_check_notes_the_handoffs_of_an_off_page_chart(cli: typer.Typer) -> None:
    chart = Path(__file__).parent / "charts" / "handoff.dot"
    result = CliRunner().invoke(cli, ["flowchart", "check", str(chart)])
    assert result.exit_code == 0, result.output
    assert (
        f"  NOTE    `{chart}`: nodes `claims_chart`, `billing_chart` have no way out and not drawn as an end; "
        "imported as hand-off terminal(s) (outcome `handoff`): mark real ends with an oval/stadium shape or an "
        "ending label"
    ) in result.output
    assert "terminals:      3: claims_chart (handoff), billing_chart (handoff), bye (success)" in result.output


def test_subgraphs_and_clusters_become_groups_and_links_to_a_subgraph_enter_it() -> None:
    charts = Path(__file__).parent / "charts"
    fc = load_flowchart(charts / "structure.mmd")
    assert {n.id: n.group for n in fc.nodes.values()} == {
        "start": None,
        "ask": "Intake team",
        "check": "Intake team",
        "verify": "Nested check",  # the innermost subgraph wins
        "charge": "billing",
        "quoted": "Quoted title with spaces",
        "done": None,
    }
    # `start --> intake` points at the subgraph: it enters at `ask`; `orphan` (a style line's node) is left out
    assert [(e.source, e.target) for e in fc.edges][:2] == [("start", "ask"), ("ask", "check")]
    assert fc.notes[0].endswith("links to the subgraph `intake` enter it at `ask`; links from it leave from `verify`")
    assert "`orphan` connected to no other node; left out of the chart" in fc.notes[1]
    assert loads_yaml(dump_yaml(fc)) == fc and "group: Intake team" in dump_yaml(fc)
    dot = load_flowchart(charts / "attributes.dot")
    assert (dot.nodes["refund"].group, dot.nodes["explain"].group, dot.nodes["ask"].group) == (
        "Billing",  # a cluster's label
        "policy",  # a named subgraph without a label
        None,
    )
