"""Import a Graphviz DOT drawing into a :class:`Flowchart`.

A hand parser rather than ``pydot``: pydot pulls in pyparsing and reports a bad file
as a parse exception with a column into a flattened string, while a chart author
needs the line and the token. The grammar is DOT's (``strict``, ``graph``/``digraph``,
node, edge and attribute statements, ``node [...]``/``edge [...]`` defaults,
subgraphs, ``A -> {B C}``, ``A -> B -> C``, quoted and ``+``-joined strings, HTML
labels, ports, ``//``, ``/* */`` and ``#`` comments).

Mapping: ``shape=diamond`` (or ``rhombus``, ``hexagon``) is a decision; ``oval``,
``ellipse``, ``circle``, ``doublecircle``, ``egg``, ``point``, and Graphviz's own
start/end markers ``Mdiamond`` and ``Msquare`` mark the start and the ends;
``box3d``, ``component`` and ``cds`` (also ``tab``, ``folder``) are tool calls; any
other shape is an agent step. Edge ``label`` (or ``xlabel``) is the condition. Explicit attributes
``kind``, ``tool`` and ``outcome`` override the inference.

Example::

    fc = parse_dot('digraph { s [shape=oval label="Start"]; s -> a -> e; e [shape=oval label="Done"] }')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.flowchart import Flowchart, FlowchartError
from compiler.formats.drawing import DrawnEdge, DrawnNode, Shape, clean_label, from_graph

_DECISION = {"diamond", "rhombus", "hexagon"}
# Mdiamond / Msquare: Graphviz's own examples mark start and end with them.
_OVAL = {
    "oval",
    "ellipse",
    "circle",
    "doublecircle",
    "egg",
    "point",
    "mcircle",
    "doubleoctagon",
    "mdiamond",
    "msquare",
}
_TOOL = {"box3d", "component", "cds", "tab", "folder"}
_KEYWORDS = {"graph", "digraph", "subgraph", "node", "edge", "strict"}
_HTML = "\x00html:"  # prefix of an attribute value written as an HTML string `<...>`

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<comment>//[^\n]*|/\*.*?\*/|\#[^\n]*)
  | (?P<edgeop>->|--)
  | (?P<punct>[{}\[\];,=:])
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<html><)
  | (?P<id>-?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)|[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)
    """,
    re.X | re.S,
)


@dataclass
class _Tok:
    kind: str  # id, edgeop, punct, end
    value: str
    line: int
    quoted: str = ""  # "string" or "html" for quoted IDs: never keywords, labels cleaned by kind


def _tokenize(text: str, source: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m and text.startswith('"', pos):
            raise FlowchartError(f"`{source}` line {line}: a quoted string is never closed; add the closing `\"`")
        if not m and text.startswith("/*", pos):
            raise FlowchartError(f"`{source}` line {line}: a `/*` comment is never closed; add `*/`")
        if not m:
            raise FlowchartError(
                f"`{source}` line {line}: unexpected `{text[pos : pos + 15].splitlines()[0]}`; check the DOT syntax"
            )
        kind = m.lastgroup or ""
        value = m.group(0)
        if kind == "html":
            depth, end = 0, pos
            while end < len(text):
                if text[end] == "<":
                    depth += 1
                elif text[end] == ">":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            if depth != 0:
                raise FlowchartError(
                    f"`{source}` line {line}: an HTML label `<...>` is never closed; add the `>`"
                )
            value = text[pos : end + 1]
            toks.append(_Tok("id", value[1:-1], line, "html"))
            line += value.count("\n")
            pos = end + 1
            continue
        if kind == "string":
            # DOT escapes only `\"` (and a backslash-newline continues the line); `\n`, `\l`,
            # `\N` are label escapes, read where the label is.
            body = value[1:-1].replace('\\"', '"').replace("\\\n", "").replace("\\\r\n", "")
            # "a" + "b" concatenation
            if toks and toks[-1].kind == "plus":
                toks.pop()
                toks[-1].value += body
            else:
                toks.append(_Tok("id", body, line, "string"))
        elif kind == "id":
            toks.append(_Tok("id", value, line))
        elif kind in ("edgeop", "punct"):
            toks.append(_Tok(kind, value, line))
        line += value.count("\n")
        pos = m.end()
        # `+` between strings is not in the token regex; handle it here.
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "+" and toks and toks[-1].kind == "id":
            toks.append(_Tok("plus", "+", line))
            pos += 1
    toks.append(_Tok("end", "", toks[-1].line if toks else line))
    return toks


class _Parser:
    def __init__(self, toks: list[_Tok], source: str) -> None:
        self.toks = toks
        self.i = 0
        self.source = source
        self.directed = True
        self.nodes: dict[str, DrawnNode] = {}
        self.node_attrs: dict[str, dict[str, str]] = {}
        self.edges: list[DrawnEdge] = []
        self.mentioned: list[list[str]] = []  # node ids named inside each open subgraph
        self.scopes: list[dict[str, str]] = [{}]  # graph attributes of each open (sub)graph
        self.name = ""
        self.strict = False
        self.seen_edges: set[tuple[str, str]] = set()

    def fail(self, msg: str, tok: _Tok | None = None) -> FlowchartError:
        tok = tok or self.toks[self.i]
        return FlowchartError(f"`{self.source}` line {tok.line}: {msg}")

    def peek(self, offset: int = 0) -> _Tok:
        return self.toks[min(self.i + offset, len(self.toks) - 1)]

    def take(self, kind: str, value: str | None = None) -> _Tok:
        tok = self.peek()
        if tok.kind != kind or (value is not None and tok.value != value):
            want = f"`{value}`" if value else "a name"
            got = f"`{tok.value}`" if tok.kind != "end" else "the end of the file"
            raise self.fail(f"expected {want}, got {got}")
        self.i += 1
        return tok

    def accept(self, kind: str, value: str | None = None) -> bool:
        tok = self.peek()
        if tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return True
        return False

    def keyword(self, offset: int = 0) -> str:
        """The keyword at ``offset`` (lower case: DOT keywords ignore case), or "" for a name or quoted ID."""
        tok = self.peek(offset)
        if tok.kind == "id" and not tok.quoted and tok.value.lower() in _KEYWORDS:
            return tok.value.lower()
        return ""

    def graph(self) -> None:
        if self.keyword() == "strict":
            self.i += 1
            self.strict = True
        head = self.peek()
        if self.keyword() not in ("graph", "digraph"):
            got = head.value if head.kind != "end" else "an empty file"
            raise self.fail(
                f"expected `digraph` or `graph`, got `{got}`; a DOT file starts with `digraph NAME {{`"
            )
        self.i += 1
        self.directed = head.value.lower() == "digraph"
        if self.peek().kind == "id":
            self.name = self.take("id").value
        self.take("punct", "{")
        self.stmt_list({}, {})
        self.take("punct", "}")
        if self.peek().kind != "end":
            raise self.fail(f"unexpected `{self.peek().value}` after the closing `}}`; one graph per file")

    def stmt_list(self, node_defaults: dict[str, str], edge_defaults: dict[str, str]) -> None:
        node_defaults, edge_defaults = dict(node_defaults), dict(edge_defaults)
        while not (self.peek().kind == "punct" and self.peek().value == "}"):
            if self.peek().kind == "end":
                raise self.fail("the graph body is never closed; add `}`")
            self.stmt(node_defaults, edge_defaults)
            self.accept("punct", ";")

    def stmt(self, node_defaults: dict[str, str], edge_defaults: dict[str, str]) -> None:
        tok = self.peek()
        word = self.keyword()
        if word in ("node", "edge", "graph") and self.peek(1).value == "[":
            self.i += 1
            attrs = self.attr_lists()
            if word == "node":
                node_defaults.update(attrs)
            elif word == "edge":
                edge_defaults.update(attrs)
            else:
                self.scopes[-1].update(attrs)
            return
        if tok.kind == "id" and not word and self.peek(1).kind == "punct" and self.peek(1).value == "=":
            self.i += 2  # graph attribute `a = b`
            self.scopes[-1][tok.value.lower()] = self.take("id").value
            return
        left = self.operand(node_defaults, edge_defaults)
        if self.peek().kind != "edgeop":
            attrs = self.attr_lists() if self.peek().value == "[" else {}
            for nid in left:
                self.node_attrs[nid].update(attrs)
            return
        chain = [left]
        while self.peek().kind == "edgeop":
            op = self.take("edgeop")
            if op.value == "--" and self.directed:
                raise self.fail("`--` in a `digraph`; use `->` for directed edges", op)
            if op.value == "->" and not self.directed:
                raise self.fail("`->` in an undirected `graph`; use `digraph` or `--`", op)
            if self.peek().kind not in ("id",) and self.peek().value != "{":
                raise self.fail(f"the edge has no target; expected a node after `{op.value}`")
            chain.append(self.operand(node_defaults, edge_defaults))
        attrs = dict(edge_defaults)
        if self.peek().value == "[":
            attrs.update(self.attr_lists())
        label = attrs.get("label") or attrs.get("xlabel") or ""
        for a_group, b_group in zip(chain, chain[1:], strict=False):
            for a in a_group:
                for b in b_group:
                    if self.strict:  # a strict graph merges repeated edges (both ways when undirected)
                        key = (a, b) if self.directed else (min(a, b), max(a, b))
                        if key in self.seen_edges:
                            continue
                        self.seen_edges.add(key)
                    self.edges.append(DrawnEdge(a, b, _label_text(label, a, self.name), tok.line))

    def operand(self, node_defaults: dict[str, str], edge_defaults: dict[str, str]) -> list[str]:
        tok = self.peek()
        if self.keyword() == "subgraph" or (tok.kind == "punct" and tok.value == "{"):
            sub_name = ""
            if tok.kind == "id":
                self.i += 1
                if self.peek().kind == "id":
                    sub_name = self.take("id").value
            self.mentioned.append([])
            self.scopes.append({})
            self.take("punct", "{")
            self.stmt_list(node_defaults, edge_defaults)
            self.take("punct", "}")
            scope = self.scopes.pop()
            # Graphviz walks a subgraph's nodes in the order they were first created in the graph
            # (not as listed), which decides the edge order and, in a strict graph, which way round
            # a repeated edge is kept.
            order = {nid: k for k, nid in enumerate(self.nodes)}
            inside = sorted(dict.fromkeys(self.mentioned.pop()), key=order.__getitem__)
            # A named subgraph or cluster groups its nodes under its own label (not one inherited
            # from the graph) or its name; `{ ... }` groups nothing; the innermost one wins.
            group = (_label_text(scope.get("label", ""), sub_name, self.name) or sub_name) if sub_name else ""
            if group:
                for nid in inside:
                    if self.nodes[nid].group is None:
                        self.nodes[nid].group = group
            if self.mentioned:
                self.mentioned[-1].extend(inside)
            return inside
        if tok.kind != "id" or self.keyword():
            got = tok.value if tok.kind != "end" else "the end of the file"
            raise self.fail(f"expected a node name, got `{got}`")
        self.i += 1
        if self.accept("punct", ":"):  # port (and compass point)
            self.take("id")
            if self.accept("punct", ":"):
                self.take("id")
        if tok.value not in self.nodes:
            self.nodes[tok.value] = DrawnNode(tok.value, line=tok.line)
            self.node_attrs[tok.value] = dict(node_defaults)
        if self.mentioned:
            self.mentioned[-1].append(tok.value)
        return [tok.value]

    def attr_lists(self) -> dict[str, str]:
        attrs: dict[str, str] = {}
        while self.accept("punct", "["):
            while not self.accept("punct", "]"):
                key = self.take("id")
                if self.accept("punct", "="):
                    value = self.take("id")
                    # an HTML label keeps a marker so that the label reader knows to strip its tags
                    attrs[key.value.lower()] = _HTML + value.value if value.quoted == "html" else value.value
                else:
                    attrs[key.value.lower()] = "true"
                self.accept("punct", ",") or self.accept("punct", ";")
        return attrs


def parse_graph(text: str, source: str = "<dot>") -> tuple[dict[str, DrawnNode], list[DrawnEdge], str]:
    """The drawing as Graphviz reads it: nodes in creation order, edges, and the graph's name."""
    parser = _Parser(_tokenize(text, source), source)
    parser.graph()
    for nid, node in parser.nodes.items():
        attrs = parser.node_attrs[nid]
        shape = attrs.get("shape", "").lower()
        kind: Shape = "rect"
        if shape in _DECISION:
            kind = "decision"
        elif shape in _OVAL:
            kind = "oval"
        elif shape in _TOOL:
            kind = "tool"
        elif not shape:
            kind = "oval"  # Graphviz draws an ellipse when no shape is given
        node.shape = kind
        node.drawn = shape or "ellipse"
        node.label = _label_text(attrs.get("label", "\\N"), nid, parser.name) or nid
        node.attrs = {k: v for k, v in attrs.items() if k in ("kind", "tool", "outcome")}
    return parser.nodes, parser.edges, parser.name


def parse_dot(text: str, name: str = "workflow", source: str = "<dot>") -> Flowchart:
    """Parse DOT text; raises :class:`FlowchartError` naming the line at fault."""
    nodes, edges, graph_name = parse_graph(text, source)
    if not nodes:
        raise FlowchartError(f"`{source}`: the graph has no nodes; draw at least a start and an end")
    return from_graph(graph_name or name, source, nodes, edges)


def _label_text(label: str, obj: str, graph: str) -> str:
    """A DOT label as plain text: HTML labels stripped of tags, escapes `\\N` `\\G` `\\n` `\\l` `\\r` read."""
    if label.startswith(_HTML):
        return clean_label(label[len(_HTML):])
    text = label.replace("\\N", obj).replace("\\G", graph).replace("\\E", obj)
    text = re.sub(r"\\[nlr]", " ", text).replace("\\\\", "\\")
    return " ".join(text.split())
