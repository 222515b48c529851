"""Import a Mermaid ``flowchart``/``graph`` drawing into a :class:`Flowchart`.

A hand parser for the flowchart subset teams draw procedures with; Mermaid's own
grammar lives in JavaScript, and this way every error names the line and the text.

Supported: ``flowchart``/``graph`` headers with an optional direction (TB TD BT RL
LR), ``%%`` comments, ``;`` or newline separated statements, YAML front matter
(``title`` names the chart), node shapes ``A[rect]`` ``A(round)`` ``A([stadium])``
``A((circle))`` ``A{decision}`` ``A{{hexagon}}`` (a decision too) ``A[[subroutine]]``
(a tool call) ``A[(database)]`` ``A>flag]`` ``A[/lean/]``, quoted labels
``A["text"]``, links ``-->`` ``---`` ``-.->`` ``==>`` with labels written
``-- label -->`` ``--label-->`` ``-->|label|`` ``-. label .->`` ``== label ==>``,
chains ``A --> B --> C`` and ``A & B --> C & D``. ``classDef``/``class``/``style``/
``linkStyle``/``click`` lines, ``:::class`` suffixes and ``subgraph``/``end``
wrappers are ignored. Kinds are inferred as :func:`compiler.flowchart.from_graph`
says.

Example::

    fc = parse_mermaid("flowchart TD\\n  S([Start]) --> A[Ask city] --> E([Done])")
"""

from __future__ import annotations

import re

from compiler.flowchart import DrawnEdge, DrawnNode, Flowchart, FlowchartError, Shape, from_graph

_HEADER = re.compile(r"^(flowchart|graph)(?:\s+(TB|TD|BT|RL|LR))?\s*;?\s*$", re.I)
_IGNORED = re.compile(
    r"^(classDef|class|style|linkStyle|click|direction|accTitle|accDescr)\b|^end\s*$|^subgraph\b"
)
_ID = re.compile(r"[A-Za-z0-9_]+(?:[-.][A-Za-z0-9_]+)*")
# Openers, longest first, with their closer and shape class.
_SHAPES: tuple[tuple[str, str, Shape], ...] = (
    ("([", "])", "oval"),
    ("[[", "]]", "tool"),
    ("[(", ")]", "rect"),
    ("((", "))", "oval"),
    ("{{", "}}", "decision"),
    ("[/", "/]", "rect"),
    ("[\\", "\\]", "rect"),
    ("[", "]", "rect"),
    ("(", ")", "round"),
    ("{", "}", "decision"),
    (">", "]", "rect"),
)
# Links: a label inside the arrow, or plain with an optional |label| after it.
_LABELLED = (
    re.compile(r"--\s*(?P<label>[^\s\->|][^>|]*?)\s*-{2,}>"),
    re.compile(r"-\.\s*(?P<label>[^\s.\->|][^>|]*?)\s*\.-+>"),
    re.compile(r"==\s*(?P<label>[^\s=>|][^>|]*?)\s*=+=>"),
)
_PLAIN = re.compile(
    r"(?:<?-{2,}>|-{3,}|<?-\.+->|-\.+-|<?={2,}>|={3,}|--[ox]|~~~)(?:\s*\|(?P<label>[^|]*)\|)?"
)


def parse_mermaid(text: str, name: str = "workflow", source: str = "<mermaid>") -> Flowchart:
    """Parse Mermaid flowchart text; raises :class:`FlowchartError` naming the line at fault."""
    nodes: dict[str, DrawnNode] = {}
    edges: list[DrawnEdge] = []
    lines = text.splitlines()
    n = 0
    # Front matter: ---\ntitle: ...\n---
    while n < len(lines) and not lines[n].strip():
        n += 1
    if n < len(lines) and lines[n].strip() == "---":
        end = next((j for j in range(n + 1, len(lines)) if lines[j].strip() == "---"), None)
        if end is None:
            raise FlowchartError(
                f"`{source}` line {n + 1}: front matter `---` is never closed; add a closing `---`"
            )
        for meta in lines[n + 1 : end]:
            key, _, value = meta.partition(":")
            if key.strip() == "title" and value.strip():
                name = value.strip().strip("\"'")
        n = end + 1
    header_seen = False
    for lineno in range(n + 1, len(lines) + 1):
        raw = lines[lineno - 1]
        line = raw.split("%%", 1)[0].strip()
        if not line:
            continue
        if not header_seen:
            if not _HEADER.match(line):
                first = line.split()[0]
                raise FlowchartError(
                    f"`{source}` line {lineno}: expected a `flowchart` or `graph` header, got `{first}`; "
                    "only Mermaid flowcharts can be imported"
                )
            header_seen = True
            continue
        for stmt in _statements(line):
            if _IGNORED.match(stmt):
                continue
            _parse_statement(stmt, lineno, nodes, edges, source)
    if not header_seen:
        raise FlowchartError(
            f"`{source}`: empty Mermaid file; it must start with `flowchart TD` (or `graph LR`, ...)"
        )
    if not nodes:
        raise FlowchartError(f"`{source}`: the flowchart has no nodes; draw at least a start and an end")
    return from_graph(name, source, nodes, edges)


def _statements(line: str) -> list[str]:
    """Split on `;` outside quotes and brackets."""
    out: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "[({":
            depth += 1
        elif not quoted and ch in "])}":
            depth = max(0, depth - 1)
        if ch == ";" and not quoted and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [s for s in out if s]


def _parse_statement(
    stmt: str, lineno: int, nodes: dict[str, DrawnNode], edges: list[DrawnEdge], source: str
) -> None:
    pos = 0

    def fail(msg: str) -> FlowchartError:
        return FlowchartError(f"`{source}` line {lineno}: {msg}")

    def skip_ws() -> None:
        nonlocal pos
        while pos < len(stmt) and stmt[pos].isspace():
            pos += 1

    def node_group() -> list[str]:
        nonlocal pos
        group = [node()]
        skip_ws()
        while pos < len(stmt) and stmt[pos] == "&":
            pos += 1
            skip_ws()
            group.append(node())
            skip_ws()
        return group

    def node() -> str:
        nonlocal pos
        m = _ID.match(stmt, pos)
        if not m:
            snippet = stmt[pos : pos + 20] or "(end of line)"
            raise fail(f"expected a node id at `{snippet}`; ids are letters, digits and `_`")
        nid = m.group(0)
        pos = m.end()
        label, shape = None, None
        for opener, closer, kind in _SHAPES:
            if stmt.startswith(opener, pos):
                label, pos = _label(stmt, pos + len(opener), closer, nid, fail)
                shape = kind
                break
        if stmt.startswith(":::", pos):  # class shorthand
            m2 = _ID.match(stmt, pos + 3)
            pos = m2.end() if m2 else pos + 3
        existing = nodes.get(nid)
        if existing is None:
            nodes[nid] = DrawnNode(nid, label or "", shape or "rect", line=lineno)
        elif label is not None and not existing.label:
            existing.label, existing.shape = label, shape or existing.shape
        return nid

    def link() -> str | None:
        nonlocal pos
        for rx in _LABELLED:
            m = rx.match(stmt, pos)
            if m:
                pos = m.end()
                return _unquote(m.group("label"))
        m = _PLAIN.match(stmt, pos)
        if m:
            pos = m.end()
            return _unquote(m.group("label") or "")
        return None

    skip_ws()
    left = node_group()
    while True:
        skip_ws()
        if pos >= len(stmt):
            return
        label = link()
        if label is None:
            raise fail(
                f"expected a link such as `-->` after `{stmt[:pos].strip()}`, got `{stmt[pos : pos + 20]}`"
            )
        skip_ws()
        if pos >= len(stmt):
            raise fail(f"the link at the end of `{stmt}` has no target node; add one")
        right = node_group()
        for a in left:
            for b in right:
                edges.append(DrawnEdge(a, b, label, lineno))
        left = right


def _label(stmt: str, pos: int, closer: str, nid: str, fail) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    rest = stmt[pos:]
    stripped = rest.lstrip()
    if stripped.startswith('"'):
        start = pos + (len(rest) - len(stripped)) + 1
        end_q = stmt.find('"', start)
        if end_q < 0:
            raise fail(f'node `{nid}`: the quoted label is never closed; add the closing `"`')
        label = stmt[start:end_q]
        after = end_q + 1
        while after < len(stmt) and stmt[after].isspace():
            after += 1
        if not stmt.startswith(closer, after):
            raise fail(f"node `{nid}`: expected `{closer}` after the quoted label")
        return _clean(label), after + len(closer)
    end = stmt.find(closer, pos)
    if end < 0:
        raise fail(f"node `{nid}`: the label is never closed; add `{closer}`")
    return _clean(stmt[pos:end]), end + len(closer)


def _clean(label: str) -> str:
    label = re.sub(r"<br\s*/?>", " ", label, flags=re.I)
    return " ".join(label.replace("\\n", " ").split())


def _unquote(label: str) -> str:
    label = label.strip()
    if len(label) >= 2 and label[0] == label[-1] == '"':
        label = label[1:-1]
    return _clean(label)
