"""Mermaid's flowchart vocabulary: shape names, token classes, link heads and label text.

Tables and small functions the parser in :mod:`compiler.formats.mermaid` reads from, kept
apart so the parser holds only the grammar. Shape names and link semantics follow
Mermaid 12.3 (``flowDb.ts``: ``addVertex``, ``destructLink``; the shape registry behind
``@{ shape: ... }``).

Example::

    destruct_link("-.->")                            # ('arrow_point', 'dotted')
    label_text(Text("**Bold** move", "markdown"))    # 'Bold move'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from compiler.formats.drawing import Shape, clean_label
from compiler.formats.mermaid_lexer import decode_entities

# Mermaid's shape names -> the shape class kinds are inferred from (anything else: a step).
SHAPE_CLASS: dict[str, Shape] = {
    "round": "round", "rounded": "round", "event": "round",
    "stadium": "oval", "terminal": "oval", "pill": "oval", "circle": "oval", "circ": "oval",
    "doublecircle": "oval", "dbl-circ": "oval", "double-circle": "oval", "ellipse": "oval",
    "sm-circ": "oval", "start": "oval", "small-circle": "oval", "fr-circ": "oval", "stop": "oval",
    "framed-circle": "oval", "f-circ": "oval", "junction": "oval", "filled-circle": "oval",
    "diamond": "decision", "hexagon": "decision", "diam": "decision", "decision": "decision",
    "question": "decision", "hex": "decision", "prepare": "decision",
    "subroutine": "tool", "fr-rect": "tool", "subprocess": "tool", "subproc": "tool",
    "framed-rectangle": "tool",
}
# Every name `@{ shape: ... }` accepts in Mermaid 12.3 (short names and aliases).
VALID_SHAPES = frozenset(
    "rect proc process rectangle rounded event stadium terminal pill fr-rect subprocess subproc "
    "framed-rectangle subroutine cyl db database cylinder datastore data-store folder directory bucket "
    "console browser person circle circ bang cloud diam decision diamond question hex hexagon prepare "
    "lean-r lean-right in-out lean-l lean-left out-in trap-b priority trapezoid-bottom trapezoid trap-t "
    "manual trapezoid-top inv-trapezoid dbl-circ double-circle text notch-rect card notched-rectangle "
    "lin-rect lined-rectangle lined-process lin-proc shaded-process sm-circ start small-circle fr-circ "
    "stop framed-circle fork join hourglass collate brace comment brace-l brace-r braces bolt com-link "
    "lightning-bolt doc document delay half-rounded-rectangle h-cyl das horizontal-cylinder lin-cyl "
    "disk lined-cylinder curv-trap curved-trapezoid display div-rect div-proc divided-rectangle "
    "divided-process tri extract triangle win-pane internal-storage window-pane f-circ junction "
    "filled-circle notch-pent loop-limit notched-pentagon flip-tri manual-file flipped-triangle "
    "sl-rect manual-input sloped-rectangle docs documents st-doc stacked-document st-rect procs "
    "processes stacked-rectangle bow-rect stored-data bow-tie-rectangle cross-circ summary "
    "crossed-circle tag-doc tagged-document tag-rect tagged-rectangle tag-proc tagged-process flag "
    "paper-tape odd lin-doc lined-document state choice note composite icon anchor bpmn-start "
    "bpmn-intermediate bpmn-boundary bpmn-end bpmn-gateway bpmn-activity bpmn-data bpmn-data-store "
    "bpmn-annotation".split()
)
ID_TOKENS = frozenset(
    {"NUM", "NODE_STRING", "DOWN", "MINUS", "DEFAULT", "COMMA", "COLON", "AMP", "BRKT", "MULT", "UNICODE_TEXT"}
)
ALNUM_TOKENS = frozenset(
    {"NUM", "UNICODE_TEXT", "NODE_STRING", "DIR", "DOWN", "MINUS", "COMMA", "COLON", "AMP", "BRKT", "MULT"}
)
TITLE_TOKENS = frozenset(
    {"NUM", "NODE_STRING", "SPACE", "MINUS", "AMP", "UNICODE_TEXT", "COLON", "MULT", "BRKT", "START_LINK",
     "STYLE", "LINKSTYLE", "CLASSDEF", "CLASS", "CLICK", "GRAPH", "DIR", "subgraph", "end", "DOWN", "UP"}
)
STYLE_TOKENS = frozenset({"NUM", "NODE_STRING", "COLON", "UNIT", "SPACE", "BRKT", "STYLE", "PCT"})
SEPARATORS = frozenset({"NEWLINE", "SEMI", "EOF"})
# (opening token, closing token, Mermaid's shape name)
BRACKET_SHAPES: dict[str, tuple[str, str]] = {
    "SQS": ("SQE", "square"),
    "DOUBLECIRCLESTART": ("DOUBLECIRCLEEND", "doublecircle"),
    "(-": ("-)", "ellipse"),
    "STADIUMSTART": ("STADIUMEND", "stadium"),
    "SUBROUTINESTART": ("SUBROUTINEEND", "subroutine"),
    "CYLINDERSTART": ("CYLINDEREND", "cylinder"),
    "TAGEND": ("SQE", "odd"),
}


@dataclass
class Text:
    text: str
    kind: str  # text | string | markdown


@dataclass
class Link:
    type: str
    stroke: str
    text: Text | None
    drawn: str
    id: str | None = None


@dataclass
class Group:
    title: str
    members: list[str] = field(default_factory=list)


def destruct_link(end: str, start: str | None = None) -> tuple[str, str]:
    """Mermaid's ``destructLink``: the arrow head(s) and the stroke of a link."""
    s = end.strip()
    line, kind = s[:-1], "arrow_open"
    tail = s[-1:]
    if tail in ("x", ">", "o"):
        kind = {"x": "arrow_cross", ">": "arrow_point", "o": "arrow_circle"}[tail]
        if s.startswith({"x": "x", ">": "<", "o": "o"}[tail]):
            kind, line = "double_" + kind, line[1:]
    stroke = "normal"
    if line.startswith("="):
        stroke = "thick"
    if line.startswith("~"):
        stroke = "invisible"
    if "." in line:
        stroke = "dotted"
    if start is None:
        return kind, stroke
    st = start.strip()
    start_kind = {"<": "arrow_point", "x": "arrow_cross", "o": "arrow_circle"}.get(st[:1], "arrow_open")
    if start_kind != "arrow_open":
        st = st[1:]
    start_stroke = "dotted" if "." in st else "thick" if "=" in st else "normal"
    if start_stroke != stroke:
        return "INVALID", "INVALID"
    if start_kind == "arrow_open":
        return kind, stroke
    if start_kind != kind:
        return "INVALID", "INVALID"
    merged = "double_" + start_kind
    return ("double_arrow_point" if merged == "double_arrow" else merged), stroke


def label_text(text: Text) -> str:
    """Mermaid's label text (trimmed, outer quotes dropped) as one line of plain text."""
    raw = decode_entities(text.text).strip()
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        raw = raw[1:-1]
    if text.kind == "markdown":
        raw = re.sub(r"(\*\*|__)(.+?)\1", r"\2", raw, flags=re.S)
        raw = re.sub(r"(?<![\w*])([*_])(?!\s)(.+?)(?<!\s)\1(?![\w*])", r"\2", raw, flags=re.S)
    return clean_label(raw)
