"""Import a Mermaid ``flowchart``/``graph`` drawing into a :class:`Flowchart`.

The whole flowchart grammar as Mermaid defines it (``flow.jison``): every node shape
(``[ ]`` ``( )`` ``([ ])`` ``[[ ]]`` ``[( )]`` ``(( ))`` ``((( )))`` ``(- -)`` ``{ }``
``{{ }}`` ``>text]`` ``[/ /]`` ``[\\ \\]`` ``[/ \\]`` ``[\\ /]`` ``[|field:value|text]`` and
``A@{ shape: ..., label: ... }``), labels over several lines, quoted and markdown
strings, ``&`` groups, every link (``---`` ``-->`` ``-.->`` ``==>`` ``~~~`` ``--o``
``--x`` ``<-->``, longer ones, ``e1@-->`` ids) with its text written ``-- text -->``,
``-. text .->``, ``== text ==>`` or ``-->|text|``, ``;`` separators, ``subgraph ... end``
(the nodes kept, the subgraph recorded as their group), ``classDef``/``class``/
``:::name``/``style``/``linkStyle``/``click``/``direction``/``accTitle``/``accDescr``,
whole-line ``%%`` comments, ``%%{init: ...}%%`` directives and YAML front matter (its
``title`` names the chart). Tokens come from :mod:`compiler.formats.mermaid_lexer`,
which keeps Mermaid's lexer rules in Mermaid's order; the productions below follow the
grammar's, so a chart Mermaid accepts is read into the same nodes and edges, and one it
rejects is an error naming the line.

Mapping onto kinds: see :mod:`compiler.formats.drawing` and ``docs/flowcharts.md``.

Example::

    fc = parse_mermaid("flowchart TD\\n  S([Start]) --> A[Ask city] --> E([Done])")
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import yaml

from compiler.flowchart import Flowchart, FlowchartError
from compiler.formats.drawing import DrawnEdge, DrawnNode, clean_label, from_graph
from compiler.formats.mermaid_lexer import LexError, Token, decode_entities, lex, preprocess
from compiler.formats.mermaid_vocab import (
    ALNUM_TOKENS,
    BRACKET_SHAPES,
    ID_TOKENS,
    SEPARATORS,
    SHAPE_CLASS,
    STYLE_TOKENS,
    TITLE_TOKENS,
    VALID_SHAPES,
    Group,
    Link,
    Text,
    destruct_link,
    label_text,
)


class _Parser:
    def __init__(self, toks: list[Token], origin: list[int], raw: str, source: str) -> None:
        self.toks = toks
        self.i = 0
        self.origin = origin
        self.source = source
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", raw)]
        self.nodes: dict[str, DrawnNode] = {}
        self.edges: list[DrawnEdge] = []
        self.edge_ids: set[str] = set()
        self.groups: list[Group] = []
        self.clusters: dict[str, list[str]] = {}  # subgraph id -> the nodes inside, nested ones too
        self.n_links = 0

    # -------------------------------------------------------------- helpers

    def line(self, pos: int) -> int:
        off = self.origin[min(pos, len(self.origin) - 1)] if self.origin else 0
        return bisect.bisect_right(self.line_starts, off)

    def fail(self, msg: str, tok: Token | None = None) -> FlowchartError:
        tok = tok or self.peek()
        return FlowchartError(f"`{self.source}` line {self.line(tok.pos)}: {msg}")

    def peek(self, k: int = 0) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def at(self, *types: str) -> bool:
        return self.peek().type in types

    def take(self, *types: str, want: str = "") -> Token:
        tok = self.peek()
        if tok.type not in types:
            raise self.unexpected(want or " or ".join(f"`{t}`" for t in types))
        self.i += 1
        return tok

    def unexpected(self, want: str, where: Token | None = None) -> FlowchartError:
        tok = self.peek()
        where = where or tok
        if tok.type in ("$end", "EOF"):
            got = "the end of the chart"
        elif tok.type == "NEWLINE":
            got = "the end of the line"
        else:
            got = f"`{tok.text.strip() or tok.text}`"
        if tok.type == "NODE_STRING" and tok.text.startswith("%%"):
            return self.fail(
                "a `%%` comment must be on a line of its own (Mermaid ignores only whole-line comments)", where
            )
        if tok.type == "end":
            return self.fail(
                f"expected {want}, got the keyword `end`; a node cannot be called `end` (try `End`)", where
            )
        return self.fail(f"expected {want}, got {got}", where)

    def spaces(self) -> None:
        while self.at("SPACE"):
            self.i += 1

    # ------------------------------------------------------------ structure

    def chart(self) -> None:
        while self.at("SPACE", "NEWLINE"):
            self.i += 1
        self.take("GRAPH", want="a `flowchart` or `graph` header")
        if self.at("NODIR"):
            self.i += 1
        else:
            self.take("DIR", want="a direction (TB, TD, BT, RL or LR) or a new line after the header")
            self.spaces()
            self.take("SEMI", "NEWLINE", want="a new line or `;` after the header")
        self.document(None)

    def document(self, group: Group | None, opener: Token | None = None) -> list[str]:
        """Statements until `end` (in a subgraph) or the end of the chart; the nodes they name."""
        named: list[str] = []
        while True:
            tok = self.peek()
            if tok.type in ("SEMI", "NEWLINE", "SPACE", "EOF"):
                self.i += 1
                continue
            if tok.type == "$end":
                if group is not None:
                    raise self.fail(
                        f"the subgraph `{group.title}` is never closed; add `end` after its last line", opener
                    )
                return named
            if tok.type == "end":
                if group is None:
                    raise self.fail("`end` without an open `subgraph`; remove it or open a subgraph")
                self.i += 1
                return named
            named.extend(self.statement())

    def statement(self) -> list[str]:
        tok = self.peek()
        t = tok.type
        if t in ID_TOKENS:
            named = self.vertex_statement()
        elif t == "STYLE":
            self.i += 1
            self.take("SPACE", want="a space after `style`")
            nid = self.id_string()
            self.take("SPACE", want="a space and the styles after the node id")
            self.styles()
            if nid not in self.edge_ids:
                self.vertex(nid, tok)  # Mermaid creates a node a style names
            named = []
        elif t == "LINKSTYLE":
            self.link_style()
            named = []
        elif t == "CLASSDEF":
            self.i += 1
            self.take("SPACE", want="a space after `classDef`")
            self.id_string()
            self.take("SPACE", want="a space and the styles after the class name")
            self.styles()
            named = []
        elif t == "CLASS":
            self.i += 1
            self.take("SPACE", want="a space after `class`")
            self.id_string()
            self.take("SPACE", want="a space and a class name after the node ids")
            self.id_string()
            named = []
        elif t == "CLICK":
            self.click()
            named = []
        elif t == "subgraph":
            return [self.subgraph()]
        elif t.startswith("direction_") or t in ("acc_descr_multiline_value",):
            self.i += 1
            return []
        elif t in ("acc_title", "acc_descr"):
            self.i += 1
            self.take(f"{t}_value", want="the text")
            return []
        else:
            raise self.unexpected("a node, a link or a statement")
        if not self.at(*SEPARATORS):
            raise self.unexpected("a new line or `;`")
        self.i += 1
        return named

    def subgraph(self) -> str:
        head = self.take("subgraph")
        sub_id: str | None = None
        title = ""
        if self.at("SPACE"):
            self.i += 1
            raw = self.title_text()
            title = sub_id = raw.text.strip()
            if self.at("SQS"):
                self.i += 1
                t = self.text()
                self.take("SQE", want="`]` after the subgraph title")
                title = t.text.strip()
            elif re.search(r"\s", raw.text):
                sub_id = None  # a title with spaces is no id (Mermaid numbers the subgraph instead)
        if not self.at(*SEPARATORS):
            raise self.unexpected("a new line after the subgraph title")
        self.i += 1
        group = Group(clean_label(decode_entities(title)) or sub_id or "subgraph")
        members = self.document(group, head)
        sub_id = sub_id or f"subGraph{len(self.groups)}"  # counted once the inner ones are done, as Mermaid does
        for nid in members:
            node = self.nodes.get(nid)
            if node is not None and node.group is None:
                node.group = group.title  # the innermost subgraph claims a node first, as in Mermaid
        self.groups.append(group)
        flat: list[str] = []
        for nid in members:
            flat.extend(self.clusters.get(nid, [nid]))
        self.clusters.setdefault(sub_id, []).extend(dict.fromkeys(flat))
        return sub_id

    def title_text(self) -> Text:
        if self.at("STR", "MD_STR"):
            tok = self.take("STR", "MD_STR")
            parts = [tok.text]
            kind = "string" if tok.type == "STR" else "markdown"
        elif self.at(*TITLE_TOKENS):
            parts, kind = [], "text"
        else:
            raise self.unexpected("a subgraph id or title")
        while self.at(*TITLE_TOKENS):
            parts.append(self.take(*TITLE_TOKENS).text)
        return Text("".join(parts), kind)

    def styles(self) -> None:
        """``stylesOpt``: style components separated by commas (only checked, never used)."""
        while True:
            if not self.at(*STYLE_TOKENS):
                raise self.unexpected("a style such as `fill:#f9f`")
            while self.at(*STYLE_TOKENS):
                self.i += 1
            if not self.at("COMMA"):
                return
            self.i += 1

    def link_style(self) -> None:
        head = self.take("LINKSTYLE")
        self.take("SPACE", want="a space after `linkStyle`")
        if self.at("DEFAULT"):
            self.i += 1
        else:
            indexes = [int(self.take("NUM", want="a link number or `default`").text)]
            while self.at("COMMA"):
                self.i += 1
                indexes.append(int(self.take("NUM", want="a link number").text))
            for idx in indexes:
                if idx >= self.n_links:
                    raise self.fail(
                        f"`linkStyle {idx}` names no link: {self.n_links} link(s) come before it, "
                        f"numbered from 0",
                        head,
                    )
        self.take("SPACE", want="a space and the styles")
        if self.at("INTERPOLATE"):
            self.i += 1
            self.take("SPACE", want="a space and a curve name after `interpolate`")
            self.alnum()
            if not self.at("SPACE"):
                return
            self.i += 1
        self.styles()

    def alnum(self) -> str:
        if not self.at(*ALNUM_TOKENS):
            raise self.unexpected("a name")
        parts = []
        while self.at(*ALNUM_TOKENS):
            parts.append(self.take(*ALNUM_TOKENS).text)
        return "".join(parts)

    def click(self) -> None:
        self.take("CLICK")
        if self.at("CALLBACKNAME"):
            self.i += 1
            if self.at("CALLBACKARGS"):
                self.i += 1
            if self.at("SPACE") and self.peek(1).type == "STR":
                self.i += 2
            return
        if self.at("HREF"):
            self.i += 1
            self.take("STR", want='a quoted link after `href`')
            self._link_tail()
            return
        if self.at("STR"):
            self.i += 1
            self._link_tail()
            return
        self.alnum()
        if self.at("SPACE") and self.peek(1).type == "STR":
            self.i += 2

    def _link_tail(self) -> None:
        if self.at("SPACE") and self.peek(1).type == "STR":
            self.i += 2
        if self.at("SPACE") and self.peek(1).type == "LINK_TARGET":
            self.i += 2

    # ---------------------------------------------------------------- nodes

    def vertex_statement(self) -> list[str]:
        named: list[str] = []
        left = self.node_group()
        named.extend(left)
        if self.at("SHAPE_DATA"):
            self.shape_data(left[-1])
        else:
            self.spaces()
        while self.at("LINK", "START_LINK", "LINK_ID"):
            link_tok = self.peek()
            link = self.link()
            if not self.at(*ID_TOKENS):
                raise self.unexpected(f"a target node after the link `{link.drawn.strip()}`", link_tok)
            right = self.node_group()
            if self.at("SHAPE_DATA"):
                self.shape_data(right[-1])
            else:
                self.spaces()
            self.add_links(left, right, link)
            named.extend(right)
            left = right
        return named

    def node_group(self) -> list[str]:
        ids = [self.styled_vertex()]
        while True:
            pending: tuple[str, int] | None = None
            if self.at("SHAPE_DATA"):
                j = self.i
                while self.toks[j].type == "SHAPE_DATA":
                    j += 1
                if not (self.toks[j].type == "SPACE" and self.toks[j + 1].type == "AMP"):
                    return ids
                pending = (ids[-1], self.i)  # Mermaid applies it once the next node is read
                self.i = j
            if not (self.at("SPACE") and self.peek(1).type == "AMP"):
                return ids
            self.i += 2
            if not self.at("SPACE"):
                raise self.unexpected("a space after `&`")
            self.spaces()
            if not self.at(*ID_TOKENS):
                raise self.unexpected("a node after `&`")
            ids.append(self.styled_vertex())
            if pending is not None:
                resume, self.i = self.i, pending[1]
                self.shape_data(pending[0])
                self.i = resume

    def styled_vertex(self) -> str:
        nid = self.vertex_shape()
        if self.at("STYLE_SEPARATOR"):
            self.i += 1
            self.id_string()
        return nid

    def id_string(self) -> str:
        if not self.at(*ID_TOKENS):
            raise self.unexpected("a node id")
        parts = []
        while self.at(*ID_TOKENS):
            parts.append(self.take(*ID_TOKENS).text)
        return "".join(parts)

    def vertex_shape(self) -> str:
        first = self.peek()
        nid = self.id_string()
        t = self.peek().type
        label: Text | None = None
        shape: str | None = None
        if t in BRACKET_SHAPES:
            closer, shape = BRACKET_SHAPES[t]
            self.i += 1
            label = self.text()
            self.closing(closer, nid)
        elif t == "PS":
            self.i += 1
            if self.at("PS"):
                self.i += 1
                label, shape = self.text(), "circle"
                self.closing("PE", nid)
                self.closing("PE", nid)
            else:
                label, shape = self.text(), "round"
                self.closing("PE", nid)
        elif t == "DIAMOND_START":
            self.i += 1
            if self.at("DIAMOND_START"):
                self.i += 1
                label, shape = self.text(), "hexagon"
                self.closing("DIAMOND_STOP", nid)
                self.closing("DIAMOND_STOP", nid)
            else:
                label, shape = self.text(), "diamond"
                self.closing("DIAMOND_STOP", nid)
        elif t in ("TRAPSTART", "INVTRAPSTART"):
            self.i += 1
            label = self.text()
            end = self.take("TRAPEND", "INVTRAPEND", want="`/]` or `\\]` to close the label")
            shape = {
                ("TRAPSTART", "TRAPEND"): "trapezoid",
                ("TRAPSTART", "INVTRAPEND"): "lean_right",
                ("INVTRAPSTART", "INVTRAPEND"): "inv_trapezoid",
                ("INVTRAPSTART", "TRAPEND"): "lean_left",
            }[(t, end.type)]
        elif t == "VERTEX_WITH_PROPS_START":
            self.i += 1
            self.take("NODE_STRING", want="a property name after `[|`")
            self.take("COLON", want="`:` after the property name")
            self.take("NODE_STRING", want="a property value")
            self.take("PIPE", want="`|` after the property")
            label, shape = self.text(), "rect"
            self.closing("SQE", nid)
        if nid not in self.edge_ids:
            self.vertex(nid, first, label, shape)
        return nid

    def closing(self, closer: str, nid: str) -> None:
        if not self.at(closer):
            want = {"SQE": "`]`", "PE": "`)`", "DIAMOND_STOP": "`}`", "STADIUMEND": "`])`",
                    "SUBROUTINEEND": "`]]`", "CYLINDEREND": "`)]`", "DOUBLECIRCLEEND": "`)))`",
                    "-)": "`-)`"}[closer]
            raise self.unexpected(f"{want} to close the label of node `{nid}`")
        self.i += 1

    def text(self) -> Text:
        tok = self.peek()
        if tok.type == "STR":
            kind = "string"
        elif tok.type == "MD_STR":
            kind = "markdown"
        elif tok.type in ("TEXT", "TAGSTART", "TAGEND", "UNICODE_TEXT"):
            kind = "text"
        else:
            raise self.unexpected("a label")
        self.i += 1
        parts = [tok.text]
        while self.at("TEXT", "TAGSTART", "TAGEND", "UNICODE_TEXT"):
            parts.append(self.take("TEXT", "TAGSTART", "TAGEND", "UNICODE_TEXT").text)
        return Text("".join(parts), kind)

    def vertex(self, nid: str, tok: Token, label: Text | None = None, shape: str | None = None) -> None:
        node = self.nodes.get(nid)
        if node is None:
            node = self.nodes[nid] = DrawnNode(nid, nid, line=self.line(tok.pos))
        if label is not None:
            node.label = label_text(label)
        if shape is not None:
            node.drawn = shape
            node.shape = SHAPE_CLASS.get(shape, "rect")

    def shape_data(self, nid: str) -> None:
        tok = self.peek()
        parts = []
        while self.at("SHAPE_DATA"):
            parts.append(self.take("SHAPE_DATA").text)
        body = "".join(parts)
        doc_text = "{\n" + body + "\n}" if "\n" not in body else body + "\n"
        try:
            doc: Any = yaml.load(doc_text, Loader=yaml.BaseLoader)  # every scalar a string, as Mermaid reads it
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise self.fail(f"node `{nid}`: the `@{{ ... }}` data is not valid YAML ({problem})", tok) from exc
        if not isinstance(doc, dict):
            doc = {}
        if nid in self.edge_ids:
            return  # `e1@{ animate: true }` styles the link `e1`
        node = self.nodes[nid]
        shape = doc.get("shape")
        if shape:
            if shape != shape.lower() or "_" in shape or shape not in VALID_SHAPES:
                raise self.fail(
                    f"node `{nid}`: no such shape `{shape}`; see Mermaid's shape list (for example "
                    "`rect`, `rounded`, `stadium`, `diamond`, `hex`, `subproc`, `circle`)",
                    tok,
                )
            node.drawn = shape
            node.shape = SHAPE_CLASS.get(shape, "rect")
        if doc.get("label"):
            node.label = label_text(Text(str(doc["label"]), "markdown"))
        for key in ("kind", "tool", "outcome"):  # tiergate's own keys, as DOT takes them
            if doc.get(key):
                node.attrs[key] = str(doc[key])

    # ---------------------------------------------------------------- links

    def link(self) -> Link:
        link_id = None
        if self.at("LINK_ID"):
            link_id = self.take("LINK_ID").text[:-1]
        if self.at("START_LINK"):
            start = self.take("START_LINK")
            inner = self.edge_text()
            end = self.take("LINK", want=f"the rest of the arrow after `{start.text.strip()} {inner.text.strip()}`")
            kind, stroke = destruct_link(end.text, start.text)
            drawn = f"{start.text.strip()} {inner.text.strip()} {end.text.strip()}"
            return Link(kind, stroke, inner, drawn, link_id)
        tok = self.take("LINK", want="a link such as `-->`")
        kind, stroke = destruct_link(tok.text)
        text: Text | None = None
        if self.at("PIPE"):
            self.i += 1
            text = self.text()
            self.take("PIPE", want="`|` to close the link text")
            self.spaces()
        return Link(kind, stroke, text, tok.text.strip(), link_id)

    def edge_text(self) -> Text:
        tok = self.peek()
        if tok.type not in ("EDGE_TEXT", "STR", "MD_STR", "UNICODE_TEXT"):
            raise self.unexpected("the link text")
        self.i += 1
        kind = {"STR": "string", "MD_STR": "markdown"}.get(tok.type, "text")
        parts = [tok.text]
        while self.at("EDGE_TEXT", "UNICODE_TEXT"):
            parts.append(self.take("EDGE_TEXT", "UNICODE_TEXT").text)
        return Text("".join(parts), kind)

    def add_links(self, starts: list[str], ends: list[str], link: Link) -> None:
        label = label_text(link.text) if link.text is not None else ""
        line = self.line(self.peek(-1).pos)
        for s in starts:
            for e in ends:
                self.edges.append(DrawnEdge(s, e, label, line, drawn=f"{link.type}/{link.stroke}"))
                self.n_links += 1
        if link.id:
            self.edge_ids.add(link.id)


def parse_graph(text: str, source: str = "<mermaid>") -> tuple[dict[str, DrawnNode], list[DrawnEdge], str]:
    """The drawing as Mermaid reads it: nodes in the order Mermaid creates them, edges, and the front-matter title."""
    nodes, edges, title, _ = _parse(text, source)
    return nodes, edges, title


def _parse(
    text: str, source: str
) -> tuple[dict[str, DrawnNode], list[DrawnEdge], str, dict[str, list[str]]]:
    cleaned, origin, front = preprocess(text)
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    if not cleaned.strip():
        raise FlowchartError(
            f"`{source}`: empty Mermaid file; it must start with `flowchart TD` (or `graph LR`, ...)"
        )
    if not re.match(r"\s*(flowchart|graph|flowchart-elk|swimlane-beta)\b", cleaned):
        off = origin[len(cleaned) - len(cleaned.lstrip())]
        line = bisect.bisect_right(line_starts, off)
        first = cleaned.split(None, 1)[0]
        if first == "---":
            raise FlowchartError(f"`{source}` line {line}: front matter `---` is never closed; add a closing `---`")
        raise FlowchartError(
            f"`{source}` line {line}: expected a `flowchart` or `graph` header, got `{first}`; "
            "only Mermaid flowcharts can be imported"
        )
    try:
        toks = lex(cleaned)
    except LexError as exc:
        off = origin[min(exc.pos, len(origin) - 1)] if origin else 0
        raise FlowchartError(f"`{source}` line {bisect.bisect_right(line_starts, off)}: {exc}") from None
    parser = _Parser(toks, origin, text, source)
    parser.chart()
    title = ""
    if front:
        try:
            meta = yaml.safe_load(front)
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict) and meta.get("title"):
            title = str(meta["title"])
    return parser.nodes, parser.edges, title, parser.clusters


def parse_mermaid(text: str, name: str = "workflow", source: str = "<mermaid>") -> Flowchart:
    """Parse Mermaid flowchart text; raises :class:`FlowchartError` naming the line at fault."""
    nodes, edges, title, clusters = _parse(text, source)
    if not nodes:
        raise FlowchartError(f"`{source}`: the flowchart has no nodes; draw at least a start and an end")
    return from_graph(title or name, source, nodes, edges, clusters=clusters)
