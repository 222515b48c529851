"""Import a LangGraph ``StateGraph`` (compiled or not) into a :class:`Flowchart`.

Teams whose agent already is a LangGraph graph get its procedure without redrawing it:
``tiergate flowchart import-langgraph my_agent.graph:app``. The graph's own structure is
read (``get_graph()`` of the compiled graph, plus the builder's branch functions), never
its rendering:

- ``__start__`` becomes the start node and ``__end__`` a success terminal;
- every other node is an agent step whose instruction is, in order, the node's
  ``metadata`` ``instruction``/``prompt``/``description``, its function's docstring, or
  its name; a prebuilt ``ToolNode`` is a tool step with the tool's own schema (with several
  tools, a decision leading to one tool step per tool);
- plain edges stay edges; the conditional edges leaving a node become one **decision**
  node (``<node>_route``, described by the routing function's docstring or name) with a
  branch per target, labelled with the routing key where it differs from the target.

``langgraph`` is imported only by the caller's module, never here: the functions take
the graph object, so the compiler does not depend on LangGraph.

Example::

    fc = from_langgraph(compiled_graph, name="refunds")
    fc = load_langgraph("my_agent.graph:app")      # imports my_agent.graph, reads `app`
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler.flowchart import Flowchart, FlowchartError
from compiler.formats.drawing import DrawnEdge, DrawnNode, from_graph

START = "__start__"
END = "__end__"
_META_KEYS = ("instruction", "prompt", "description")


def load_langgraph(target: str, name: str | None = None) -> Flowchart:
    """Import ``module:attribute`` (a graph, a compiled graph, or a function returning one) and read it."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise FlowchartError(
            f"`{target}`: name the graph as `module:attribute`, for example `my_agent.graph:app`"
        )
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `module` is usually the user's own file, next to them
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        hint = (
            "install it with `pip install langgraph`"
            if missing.split(".")[0] in ("langgraph", "langchain_core")
            else "check the module path and that it is importable from here"
        )
        raise FlowchartError(f"`{target}`: cannot import `{missing}` ({hint})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FlowchartError(f"`{target}`: module `{module_name}` has no attribute `{attr}`")
        obj = getattr(obj, part)
    if callable(obj) and not _is_graph(obj):
        obj = obj()  # a factory such as `build_graph()`
    return from_langgraph(obj, name=name or attr.split(".")[-1], source=target)


def _is_graph(obj: Any) -> bool:
    return hasattr(obj, "get_graph") or (hasattr(obj, "compile") and hasattr(obj, "nodes"))


def from_langgraph(graph: Any, name: str = "workflow", source: str = "<langgraph>") -> Flowchart:
    """Build the chart from a ``StateGraph`` or a compiled graph (see the module docstring)."""
    if not hasattr(graph, "get_graph"):
        if hasattr(graph, "compile"):
            graph = graph.compile()
        else:
            raise FlowchartError(
                f"`{source}`: `{type(graph).__name__}` is not a LangGraph graph; "
                "point at a `StateGraph` or its `.compile()` result"
            )
    drawn = graph.get_graph()
    builder = getattr(graph, "builder", None)
    specs: dict[str, Any] = dict(getattr(builder, "nodes", {}) or {})
    branches: dict[str, dict[str, Any]] = dict(getattr(builder, "branches", {}) or {})
    nodes: dict[str, DrawnNode] = {}
    schemas: dict[str, dict[str, Any]] = {}
    toolboxes: dict[str, list[str]] = {}  # ToolNodes with several tools: one tool step each
    for nid, node in drawn.nodes.items():
        nodes[nid] = _node(nid, node, specs.get(nid))
        for tname, tobj in _tools_of(specs.get(nid), node).items():
            schemas[tname] = _schema(tname, tobj)
        if nodes[nid].shape == "decision":
            toolboxes[nid] = sorted(_tools_of(specs.get(nid), node))
    edges: list[DrawnEdge] = []
    routes: dict[str, str] = {}
    for e in drawn.edges:
        if not getattr(e, "conditional", False):
            edges.append(DrawnEdge(e.source, e.target, _edge_label(e)))
            continue
        route = routes.get(e.source)
        if route is None:
            route = routes[e.source] = _route_id(e.source, nodes)
            nodes[route] = DrawnNode(route, _route_text(e.source, branches.get(e.source, {})), "decision")
            edges.append(DrawnEdge(e.source, route))
        label = _edge_label(e) or ("finish" if e.target == END else e.target)
        edges.append(DrawnEdge(route, e.target, label))
    for box, names in toolboxes.items():
        onward = [e for e in edges if e.source == box]
        edges = [e for e in edges if e.source != box]
        for tname in names:
            step = f"{box}.{tname}"
            nodes[step] = DrawnNode(step, f"Call {tname}.", "tool", attrs={"kind": "tool", "tool": tname})
            edges.append(DrawnEdge(box, step, tname))
            edges.extend(DrawnEdge(step, e.target, e.label) for e in onward)
    return from_graph(name, source, nodes, edges, tool_schemas=schemas)


def _tools_of(spec: Any, node: Any) -> dict[str, Any]:
    runnable = getattr(spec, "runnable", None) or getattr(node, "data", None)
    tools = getattr(runnable, "tools_by_name", None)
    return dict(tools) if isinstance(tools, dict) else {}


def _schema(name: str, tool: Any) -> dict[str, Any]:
    """The OpenAI tool schema of a LangChain tool, read duck-typed (no LangChain import here)."""
    params: dict[str, Any] = {"type": "object", "properties": {}}
    model: Any = getattr(tool, "tool_call_schema", None) or getattr(tool, "args_schema", None)
    if model is not None and hasattr(model, "model_json_schema"):
        raw = model.model_json_schema()
        params = {k: v for k, v in raw.items() if k in ("type", "properties", "required", "$defs")}
    elif isinstance(model, dict):
        params = model
    return {
        "type": "function",
        "function": {"name": name, "description": str(getattr(tool, "description", "") or ""), "parameters": params},
    }


def _node(nid: str, node: Any, spec: Any) -> DrawnNode:
    if nid == START:
        return DrawnNode(nid, "The conversation starts.", "oval", attrs={"kind": "start"})
    if nid == END:
        return DrawnNode(nid, "The conversation ends.", "oval", attrs={"kind": "terminal", "outcome": "success"})
    meta = dict(getattr(node, "metadata", None) or {}) | dict(getattr(spec, "metadata", None) or {})
    text = next((str(meta[k]) for k in _META_KEYS if meta.get(k)), "")
    runnable = getattr(spec, "runnable", None) or getattr(node, "data", None)
    names = sorted(_tools_of(spec, node))
    if len(names) == 1:
        return DrawnNode(nid, text or f"Call {names[0]}.", "tool", attrs={"kind": "tool", "tool": names[0]})
    if names:  # the model picks one of several tools: a decision, then a tool step per tool
        return DrawnNode(nid, text or "Which tool does the model call?", "decision", attrs={"kind": "decision"})
    if not text:
        text = _doc(_function_of(runnable)) or nid
    return DrawnNode(nid, text, "rect")


def _function_of(runnable: Any) -> Callable[..., Any] | None:
    for attr in ("func", "afunc"):
        fn = getattr(runnable, attr, None)
        if callable(fn):
            return fn
    return runnable if inspect.isfunction(runnable) else None


def _doc(fn: Any) -> str:
    doc = inspect.getdoc(fn) if fn is not None else None
    return " ".join(doc.split()) if doc else ""


def _route_id(source: str, taken: dict[str, DrawnNode]) -> str:
    base = f"{source}_route"
    nid, i = base, 1
    while nid in taken:
        i += 1
        nid = f"{base}_{i}"
    return nid


def _route_text(source: str, specs: dict[str, Any]) -> str:
    texts = []
    for fname, spec in specs.items():
        fn = _function_of(getattr(spec, "path", None))
        texts.append(_doc(fn) or f"Route with `{fname}`.")
    return " ".join(texts) or f"Where does the conversation go after `{source}`?"


def _edge_label(edge: Any) -> str:
    data = getattr(edge, "data", None)
    return "" if data is None else str(data)
