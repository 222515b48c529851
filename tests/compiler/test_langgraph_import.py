"""LangGraph import: a real ``StateGraph`` built here, read by `from_langgraph`, the CLI and the Mermaid importer.

Needs the ``langgraph`` package (the ``dev`` extra); without it these tests skip, except
under TIERGATE_REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from tg_testing import service_missing
from typer.testing import CliRunner

from compiler.flowchart import validate
from compiler.flowchart_cli import register_flowchart
from compiler.formats.langgraph import from_langgraph
from compiler.formats.mermaid import parse_graph, parse_mermaid
from compiler.formats.yaml import loads_yaml

GRAPH_MODULE = '''
"""A refund agent as a LangGraph graph (written by the test)."""
from typing import Literal, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    text: str


def classify(state: State) -> State:
    """Read the customer's message and decide what they want."""
    return state


def refund(state: State) -> State:
    """Issue the refund for the order."""
    return state


def human(state: State) -> State:
    return state


def route(state: State) -> Literal["refund", "human", "__end__"]:
    """Is it a refund request, something for a person, or nothing to do?"""
    return "refund"


def build() -> StateGraph:
    g = StateGraph(State)
    g.add_node("classify", classify)
    g.add_node("refund", refund)
    g.add_node("human", human, metadata={"prompt": "Hand the conversation to a colleague."})
    g.add_node("confirm", lambda s: s)
    g.add_edge(START, "classify")
    g.add_conditional_edges("classify", route)
    g.add_conditional_edges("refund", lambda s: "ok", {"ok": "confirm", "failed": "human"})
    g.add_edge("confirm", END)
    g.add_edge("human", END)
    return g


app = build().compile()
'''


def _require_langgraph() -> None:
    try:
        import langgraph  # noqa: F401
    except ImportError:
        service_missing("the `langgraph` package", "install the dev extra: pip install -e '.[dev]'")


@pytest.fixture
def graph_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    _require_langgraph()
    (tmp_path / "refund_agent.py").write_text(GRAPH_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("refund_agent", None)
    import refund_agent

    yield refund_agent
    sys.modules.pop("refund_agent", None)


def test_graph_becomes_a_chart_with_decisions(graph_module: Any) -> None:
    fc = from_langgraph(graph_module.app, name="refunds", source="refund_agent:app")
    kinds = {n.id: n.kind for n in fc.nodes.values()}
    assert kinds == {
        "__start__": "start",
        "classify": "agent",
        "refund": "agent",
        "human": "agent",
        "confirm": "agent",
        "__end__": "terminal",
        "classify_route": "decision",
        "refund_route": "decision",
    }
    assert fc.start == "__start__" and fc.nodes["__end__"].outcome == "success"
    assert fc.nodes["classify"].text == "Read the customer's message and decide what they want."
    assert fc.nodes["human"].text == "Hand the conversation to a colleague."  # metadata prompt
    assert fc.nodes["confirm"].text == "confirm"  # a lambda: no docstring, the name
    assert fc.nodes["classify_route"].text == "Is it a refund request, something for a person, or nothing to do?"
    edges = {(e.source, e.target, e.condition) for e in fc.edges}
    assert edges == {
        ("__start__", "classify", ""),
        ("classify", "classify_route", ""),
        ("classify_route", "__end__", "finish"),
        ("classify_route", "human", "human"),
        ("classify_route", "refund", "refund"),
        ("refund", "refund_route", ""),
        ("refund_route", "confirm", "ok"),
        ("refund_route", "human", "failed"),
        ("confirm", "__end__", ""),
        ("human", "__end__", ""),
    }
    assert [i for i in validate(fc) if i.kind == "structure"] == []
    # an uncompiled StateGraph reads the same
    assert from_langgraph(graph_module.build(), name="refunds", source="refund_agent:app") == fc


def test_mermaid_importer_reads_draw_mermaid(graph_module: Any) -> None:
    drawn = graph_module.app.get_graph()
    text = drawn.draw_mermaid()
    nodes, edges, _ = parse_graph(text, "draw_mermaid")
    assert list(nodes) == list(drawn.nodes)
    assert [(e.source, e.target) for e in edges] == [(e.source, e.target) for e in drawn.edges]
    fc = parse_mermaid(text, source="draw_mermaid")
    assert fc.start == "__start__" and fc.nodes["__end__"].kind == "terminal"
    assert {e.condition for e in fc.edges if e.source == "refund"} == {"ok", "failed"}
    assert [i for i in validate(fc) if i.kind == "structure"] == []


def test_cli_imports_module_attribute(graph_module: Any, tmp_path: Path) -> None:
    app = typer.Typer()
    register_flowchart(app)

    @app.callback()
    def _root() -> None:
        """Keep `flowchart` a sub-command."""

    out = tmp_path / "refunds.yaml"
    ok = CliRunner().invoke(app, ["flowchart", "import-langgraph", "refund_agent:app", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    fc = loads_yaml(out.read_text(encoding="utf-8"))
    assert fc.name == "app" and "classify_route" in fc.nodes
    factory = CliRunner().invoke(app, ["flowchart", "import-langgraph", "refund_agent:build", "--name", "r"])
    assert factory.exit_code == 0 and loads_yaml(factory.stdout).name == "r"
    # a module whose LangGraph import fails (as when the package is missing) gets the install hint
    (tmp_path / "needs_langgraph.py").write_text("import langgraph.no_such_part\n", encoding="utf-8")
    for target, needle in [
        ("needs_langgraph:app", "cannot import `langgraph.no_such_part` (install it with `pip install langgraph`)"),
        ("refund_agent", "name the graph as `module:attribute`"),
        ("no_such_module:app", "cannot import `no_such_module`"),
        ("refund_agent:nope", "module `refund_agent` has no attribute `nope`"),
        ("refund_agent:State", "is not a LangGraph graph"),
    ]:
        bad = CliRunner().invoke(app, ["flowchart", "import-langgraph", target])
        assert bad.exit_code == 2 and needle in bad.stderr and bad.stderr.count("\n") == 1, bad.output
        assert "Traceback" not in bad.output


def test_tiergate_console_script_has_import_langgraph(graph_module: Any, tmp_path: Path) -> None:
    exe = shutil.which("tiergate") or str(Path(sys.executable).with_name("tiergate"))
    if not Path(exe).exists():
        service_missing("the `tiergate` console script", "install the package: pip install -e .")
    done = subprocess.run(
        [exe, "flowchart", "import-langgraph", "refund_agent:app"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "classify_route" in loads_yaml(done.stdout).nodes
    assert done.stderr.strip() == ""  # no notes: nothing was repaired or guessed


def test_tool_nodes_become_tool_steps_with_their_schemas() -> None:
    _require_langgraph()
    from typing import TypedDict

    from langchain_core.tools import tool
    from langgraph.graph import END, START, StateGraph
    from langgraph.prebuilt import ToolNode

    @tool
    def get_order(order_id: str) -> str:
        """Look up an order by its number."""
        return "{}"

    @tool
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund part or all of an order."""
        return "{}"

    class State(TypedDict):
        messages: list[Any]

    g = StateGraph(State)
    g.add_node("lookup", ToolNode([get_order]))
    g.add_node("agent", lambda s: s)
    g.add_node("tools", ToolNode([get_order, issue_refund]))
    g.add_edge(START, "lookup")
    g.add_edge("lookup", "agent")
    g.add_edge("agent", "tools")
    g.add_edge("tools", END)
    fc = from_langgraph(g.compile(), name="tools")
    assert fc.nodes["lookup"].kind == "tool" and fc.nodes["lookup"].tool == "get_order"
    assert fc.nodes["tools"].kind == "decision"
    assert {n.id: n.tool for n in fc.nodes.values() if n.kind == "tool"} == {
        "lookup": "get_order", "tools.get_order": "get_order", "tools.issue_refund": "issue_refund"
    }
    assert {(e.source, e.target, e.condition) for e in fc.edges if "tools" in e.source} == {
        ("tools", "tools.get_order", "get_order"),
        ("tools", "tools.issue_refund", "issue_refund"),
        ("tools.get_order", "__end__", ""),
        ("tools.issue_refund", "__end__", ""),
    }
    refund = fc.tool_schema("issue_refund")
    assert refund is not None and refund["function"]["description"] == "Refund part or all of an order."
    params = refund["function"]["parameters"]
    assert params["required"] == ["order_id", "amount"] and params["properties"]["amount"]["type"] == "number"
    # required arguments become placeholders; naming their slots is left as a TODO
    assert fc.nodes["tools.issue_refund"].args == {"order_id": "{order_id}", "amount": "{amount}"}
    assert any("placeholder `{amount}` names no slot" in str(i) for i in validate(fc) if i.kind == "synthesis")
    assert [i for i in validate(fc) if i.kind == "structure"] == []
