"""Mermaid flowchart tokens, as Mermaid's own lexer cuts them.

Mermaid's flowchart lexer (``flow.jison`` in mermaid-js/mermaid, as built into the
``mermaid`` npm package 12.3) is modal and first-match: at each position the first rule
of the current state that matches wins, and rules push and pop states (a label's
brackets, an edge's text, a string). Which characters a label may hold, where a link
ends and an id begins, all follow from that order, so this module keeps the rules in
Mermaid's order, with its states, and :mod:`compiler.formats.mermaid` parses the tokens
with the grammar's productions. Reproducing the order is what lets the differential
tests (``tests/compiler/test_mermaid_oracle.py``) demand equal node and edge sets.

Also here, Mermaid's text preprocessing (front matter, ``%%{...}%%`` directives,
whole-line ``%%`` comments, ``#entity;`` codes), with every character's original offset
kept so that errors name the line in the file as written.

Example::

    toks, origin, title = tokenize("flowchart LR\\n  A[Ask] --> B")
    [t.type for t in toks]   # ['GRAPH', 'DIR', 'NEWLINE', 'SPACE', 'NODE_STRING', 'SQS', ...]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_UNICODE_LETTERS = (
    "\u00AA\u00B5\u00BA\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u02C1\u02C6-\u02D1\u02E0-\u02E4"
    "\u02EC\u02EE\u0370-\u0374\u0376\u0377\u037A-\u037D\u0386\u0388-\u038A\u038C"
    "\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u0527\u0531-\u0556\u0559\u0561-\u0587"
    "\u05D0-\u05EA\u05F0-\u05F2\u0620-\u064A\u066E\u066F\u0671-\u06D3\u06D5\u06E5\u06E6"
    "\u06EE\u06EF\u06FA-\u06FC\u06FF\u0710\u0712-\u072F\u074D-\u07A5\u07B1\u07CA-\u07EA"
    "\u07F4\u07F5\u07FA\u0800-\u0815\u081A\u0824\u0828\u0840-\u0858\u08A0\u08A2-\u08AC"
    "\u0904-\u0939\u093D\u0950\u0958-\u0961\u0971-\u0977\u0979-\u097F\u0985-\u098C\u098F"
    "\u0990\u0993-\u09A8\u09AA-\u09B0\u09B2\u09B6-\u09B9\u09BD\u09CE\u09DC\u09DD"
    "\u09DF-\u09E1\u09F0\u09F1\u0A05-\u0A0A\u0A0F\u0A10\u0A13-\u0A28\u0A2A-\u0A30\u0A32"
    "\u0A33\u0A35\u0A36\u0A38\u0A39\u0A59-\u0A5C\u0A5E\u0A72-\u0A74\u0A85-\u0A8D"
    "\u0A8F-\u0A91\u0A93-\u0AA8\u0AAA-\u0AB0\u0AB2\u0AB3\u0AB5-\u0AB9\u0ABD\u0AD0\u0AE0"
    "\u0AE1\u0B05-\u0B0C\u0B0F\u0B10\u0B13-\u0B28\u0B2A-\u0B30\u0B32\u0B33\u0B35-\u0B39"
    "\u0B3D\u0B5C\u0B5D\u0B5F-\u0B61\u0B71\u0B83\u0B85-\u0B8A\u0B8E-\u0B90\u0B92-\u0B95"
    "\u0B99\u0B9A\u0B9C\u0B9E\u0B9F\u0BA3\u0BA4\u0BA8-\u0BAA\u0BAE-\u0BB9\u0BD0"
    "\u0C05-\u0C0C\u0C0E-\u0C10\u0C12-\u0C28\u0C2A-\u0C33\u0C35-\u0C39\u0C3D\u0C58\u0C59"
    "\u0C60\u0C61\u0C85-\u0C8C\u0C8E-\u0C90\u0C92-\u0CA8\u0CAA-\u0CB3\u0CB5-\u0CB9\u0CBD"
    "\u0CDE\u0CE0\u0CE1\u0CF1\u0CF2\u0D05-\u0D0C\u0D0E-\u0D10\u0D12-\u0D3A\u0D3D\u0D4E"
    "\u0D60\u0D61\u0D7A-\u0D7F\u0D85-\u0D96\u0D9A-\u0DB1\u0DB3-\u0DBB\u0DBD\u0DC0-\u0DC6"
    "\u0E01-\u0E30\u0E32\u0E33\u0E40-\u0E46\u0E81\u0E82\u0E84\u0E87\u0E88\u0E8A\u0E8D"
    "\u0E94-\u0E97\u0E99-\u0E9F\u0EA1-\u0EA3\u0EA5\u0EA7\u0EAA\u0EAB\u0EAD-\u0EB0\u0EB2"
    "\u0EB3\u0EBD\u0EC0-\u0EC4\u0EC6\u0EDC-\u0EDF\u0F00\u0F40-\u0F47\u0F49-\u0F6C"
    "\u0F88-\u0F8C\u1000-\u102A\u103F\u1050-\u1055\u105A-\u105D\u1061\u1065\u1066"
    "\u106E-\u1070\u1075-\u1081\u108E\u10A0-\u10C5\u10C7\u10CD\u10D0-\u10FA\u10FC-\u1248"
    "\u124A-\u124D\u1250-\u1256\u1258\u125A-\u125D\u1260-\u1288\u128A-\u128D\u1290-\u12B0"
    "\u12B2-\u12B5\u12B8-\u12BE\u12C0\u12C2-\u12C5\u12C8-\u12D6\u12D8-\u1310\u1312-\u1315"
    "\u1318-\u135A\u1380-\u138F\u13A0-\u13F4\u1401-\u166C\u166F-\u167F\u1681-\u169A"
    "\u16A0-\u16EA\u1700-\u170C\u170E-\u1711\u1720-\u1731\u1740-\u1751\u1760-\u176C"
    "\u176E-\u1770\u1780-\u17B3\u17D7\u17DC\u1820-\u1877\u1880-\u18A8\u18AA\u18B0-\u18F5"
    "\u1900-\u191C\u1950-\u196D\u1970-\u1974\u1980-\u19AB\u19C1-\u19C7\u1A00-\u1A16"
    "\u1A20-\u1A54\u1AA7\u1B05-\u1B33\u1B45-\u1B4B\u1B83-\u1BA0\u1BAE\u1BAF\u1BBA-\u1BE5"
    "\u1C00-\u1C23\u1C4D-\u1C4F\u1C5A-\u1C7D\u1CE9-\u1CEC\u1CEE-\u1CF1\u1CF5\u1CF6"
    "\u1D00-\u1DBF\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59"
    "\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC"
    "\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2071\u207F"
    "\u2090-\u209C\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128"
    "\u212A-\u212D\u212F-\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C2E"
    "\u2C30-\u2C5E\u2C60-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\u2D00-\u2D25\u2D27\u2D2D"
    "\u2D30-\u2D67\u2D6F\u2D80-\u2D96\u2DA0-\u2DA6\u2DA8-\u2DAE\u2DB0-\u2DB6\u2DB8-\u2DBE"
    "\u2DC0-\u2DC6\u2DC8-\u2DCE\u2DD0-\u2DD6\u2DD8-\u2DDE\u2E2F\u3005\u3006\u3031-\u3035"
    "\u303B\u303C\u3041-\u3096\u309D-\u309F\u30A1-\u30FA\u30FC-\u30FF\u3105-\u312D"
    "\u3131-\u318E\u31A0-\u31BA\u31F0-\u31FF\u3400-\u4DB5\u4E00-\u9FCC\uA000-\uA48C"
    "\uA4D0-\uA4FD\uA500-\uA60C\uA610-\uA61F\uA62A\uA62B\uA640-\uA66E\uA67F-\uA697"
    "\uA6A0-\uA6E5\uA717-\uA71F\uA722-\uA788\uA78B-\uA78E\uA790-\uA793\uA7A0-\uA7AA"
    "\uA7F8-\uA801\uA803-\uA805\uA807-\uA80A\uA80C-\uA822\uA840-\uA873\uA882-\uA8B3"
    "\uA8F2-\uA8F7\uA8FB\uA90A-\uA925\uA930-\uA946\uA960-\uA97C\uA984-\uA9B2\uA9CF"
    "\uAA00-\uAA28\uAA40-\uAA42\uAA44-\uAA4B\uAA60-\uAA76\uAA7A\uAA80-\uAAAF\uAAB1\uAAB5"
    "\uAAB6\uAAB9-\uAABD\uAAC0\uAAC2\uAADB-\uAADD\uAAE0-\uAAEA\uAAF2-\uAAF4\uAB01-\uAB06"
    "\uAB09-\uAB0E\uAB11-\uAB16\uAB20-\uAB26\uAB28-\uAB2E\uABC0-\uABE2\uAC00-\uD7A3"
    "\uD7B0-\uD7C6\uD7CB-\uD7FB\uF900-\uFA6D\uFA70-\uFAD9\uFB00-\uFB06\uFB13-\uFB17\uFB1D"
    "\uFB1F-\uFB28\uFB2A-\uFB36\uFB38-\uFB3C\uFB3E\uFB40\uFB41\uFB43\uFB44\uFB46-\uFBB1"
    "\uFBD3-\uFD3D\uFD50-\uFD8F\uFD92-\uFDC7\uFDF0-\uFDFB\uFE70-\uFE74\uFE76-\uFEFC"
    "\uFF21-\uFF3A\uFF41-\uFF5A\uFF66-\uFFBE\uFFC2-\uFFC7\uFFCA-\uFFCF\uFFD2-\uFFD7"
    "\uFFDA-\uFFDC"
)


@dataclass(frozen=True)
class Token:
    type: str
    text: str
    pos: int  # offset in the preprocessed text; see `origin` for the file offset


class LexError(ValueError):
    """Text no rule matches, or a bracket or string left open; ``pos`` is the preprocessed offset."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.pos = pos


# (regex, token or None, action, state). Actions: "push" (jison's begin/pushState),
# "pop", "pop_push" (pop, then push `state`), "graph" (push `dir` on the first header only).
_Rule = tuple[str, str | None, str | None, str | None]

_RULES: tuple[_Rule, ...] = (
    (r"accTitle\s*:\s*", "acc_title", "push", "acc_title"),  # 0
    (r"[^\n]*", "acc_title_value", "pop", None),
    (r"accDescr\s*:\s*", "acc_descr", "push", "acc_descr"),
    (r"[^\n]*", "acc_descr_value", "pop", None),
    (r"accDescr\s*\{\s*", None, "push", "acc_descr_multiline"),
    (r"[\}]", None, "pop", None),  # 5
    (r"[^\}]*", "acc_descr_multiline_value", None, None),
    (r"@\{", "SHAPE_DATA", "push", "shapeData"),
    (r'["]', "SHAPE_DATA", "push", "shapeDataStr"),
    (r'["]', "SHAPE_DATA", "pop", None),
    (r'[^"]+', "SHAPE_DATA", None, None),  # 10: newlines in a shape-data string become <br/>
    (r'[^}^"]+', "SHAPE_DATA", None, None),
    (r"\}", None, "pop", None),
    (r"call[\s]+", None, "push", "callbackname"),
    (r"\([\s]*\)", None, "pop", None),
    (r"\(", None, "pop_push", "callbackargs"),  # 15
    (r"[^(]*", "CALLBACKNAME", None, None),
    (r"\)", None, "pop", None),
    (r"[^)]*", "CALLBACKARGS", None, None),
    (r'[^`"]+', "MD_STR", None, None),
    (r'[`]["]', None, "pop", None),  # 20
    (r'["][`]', None, "push", "md_string"),
    (r'[^"]+', "STR", None, None),
    (r'["]', None, "pop", None),
    (r'["]', None, "push", "string"),
    (r"style\b", "STYLE", None, None),  # 25
    (r"default\b", "DEFAULT", None, None),
    (r"linkStyle\b", "LINKSTYLE", None, None),
    (r"interpolate\b", "INTERPOLATE", None, None),
    (r"classDef\b", "CLASSDEF", None, None),
    (r"class\b", "CLASS", None, None),  # 30
    (r"href[\s]", "HREF", None, None),
    (r"click[\s]+", None, "push", "click"),
    (r"[\s\n]", None, "pop", None),
    (r"[^\s\n]*", "CLICK", None, None),
    (r"flowchart-elk\b", "GRAPH", "graph", "dir"),  # 35
    (r"swimlane-beta\b", "GRAPH", "graph", "dir"),
    (r"graph\b", "GRAPH", "graph", "dir"),
    (r"flowchart\b", "GRAPH", "graph", "dir"),
    (r"subgraph\b", "subgraph", None, None),
    (r"end\b\s*", "end", None, None),  # 40
    (r"_self\b", "LINK_TARGET", None, None),
    (r"_blank\b", "LINK_TARGET", None, None),
    (r"_parent\b", "LINK_TARGET", None, None),
    (r"_top\b", "LINK_TARGET", None, None),
    (r"(\r?\n)*\s*\n", "NODIR", "pop", None),  # 45
    (r"\s*LR\b", "DIR", "pop", None),
    (r"\s*RL\b", "DIR", "pop", None),
    (r"\s*TB\b", "DIR", "pop", None),
    (r"\s*BT\b", "DIR", "pop", None),
    (r"\s*TD\b", "DIR", "pop", None),  # 50
    (r"\s*BR\b", "DIR", "pop", None),
    (r"\s*<", "DIR", "pop", None),
    (r"\s*>", "DIR", "pop", None),
    (r"\s*\^", "DIR", "pop", None),
    (r"\s*v\b", "DIR", "pop", None),  # 55
    (r"[^\n\r]*direction\s+TB[^\n]*", "direction_tb", None, None),
    (r"[^\n\r]*direction\s+BT[^\n]*", "direction_bt", None, None),
    (r"[^\n\r]*direction\s+RL[^\n]*", "direction_rl", None, None),
    (r"[^\n\r]*direction\s+LR[^\n]*", "direction_lr", None, None),
    (r"[^\n\r]*direction\s+TD[^\n]*", "direction_td", None, None),  # 60
    (r'[^\s"\[\]\(\)\{\}\|]+@(?=[^\{"])', "LINK_ID", None, None),
    (r"[0-9]+", "NUM", None, None),
    (r"#", "BRKT", None, None),
    (r":::", "STYLE_SEPARATOR", None, None),
    (r":", "COLON", None, None),  # 65
    (r"&", "AMP", None, None),
    (r";", "SEMI", None, None),
    (r",", "COMMA", None, None),
    (r"\*", "MULT", None, None),
    (r"\s*[xo<]?--+[-xo>]\s*", "LINK", "pop", None),  # 70
    (r"\s*[xo<]?--\s*", "START_LINK", "push", "edgeText"),
    (r"[^-]|-(?!-)", "EDGE_TEXT", None, None),
    (r"\s*[xo<]?==+[=xo>]\s*", "LINK", "pop", None),
    (r"\s*[xo<]?==\s*", "START_LINK", "push", "thickEdgeText"),
    (r"[^=]", "EDGE_TEXT", None, None),  # 75 (Mermaid's `=(?!)` alternative never matches)
    (r"\s*[xo<]?-?\.+-[xo>]?\s*", "LINK", "pop", None),
    (r"\s*[xo<]?-\.\s*", "START_LINK", "push", "dottedEdgeText"),
    (r"[^\.]", "EDGE_TEXT", None, None),
    (r"\s*~~[\~]+\s*", "LINK", None, None),
    (r"[-/\)][\)]", "-)", "pop", None),  # 80
    (r"[^\(\)\[\]\{\}]|!\)+", "TEXT", None, None),
    (r"\(-", "(-", "push", "ellipseText"),
    (r"\]\)", "STADIUMEND", "pop", None),
    (r"\(\[", "STADIUMSTART", "push", "text"),
    (r"\]\]", "SUBROUTINEEND", "pop", None),  # 85
    (r"\[\[", "SUBROUTINESTART", "push", "text"),
    (r"\[\|", "VERTEX_WITH_PROPS_START", None, None),
    (r">", "TAGEND", "push", "text"),
    (r"\)\]", "CYLINDEREND", "pop", None),
    (r"\[\(", "CYLINDERSTART", "push", "text"),  # 90
    (r"\)\)\)", "DOUBLECIRCLEEND", "pop", None),
    (r"\(\(\(", "DOUBLECIRCLESTART", "push", "text"),
    (r"[\\(?=\])][\]]", "TRAPEND", "pop", None),
    (r"\/(?=\])\]", "INVTRAPEND", "pop", None),
    (r"\/(?!\])|\\(?!\])|[^\\\[\]\(\)\{\}\/]+", "TEXT", None, None),  # 95
    (r"\[\/", "TRAPSTART", "push", "trapText"),
    (r"\[\\", "INVTRAPSTART", "push", "trapText"),
    (r"<", "TAGSTART", None, None),
    (r">", "TAGEND", None, None),
    (r"\^", "UP", None, None),  # 100
    (r"\\\|", "SEP", None, None),
    (r"v\b", "DOWN", None, None),
    (r"\*", "MULT", None, None),
    (r"#", "BRKT", None, None),
    (r"&", "AMP", None, None),  # 105
    (r"""(?:[A-Za-z0-9!"#$%&'*+.`?\\_/]|-(?=[^>\-.]))+""", "NODE_STRING", None, None),
    (r"-", "MINUS", None, None),
    ("[" + _UNICODE_LETTERS + "]", "UNICODE_TEXT", None, None),
    (r"\|", "PIPE", "pop", None),
    (r"\|", "PIPE", "push", "text"),  # 110
    (r"\)", "PE", "pop", None),
    (r"\(", "PS", "push", "text"),
    (r"\]", "SQE", "pop", None),
    (r"\[", "SQS", "push", "text"),
    (r"(\})", "DIAMOND_STOP", "pop", None),  # 115
    (r"\{", "DIAMOND_START", "push", "text"),
    (r'[^\[\]\(\)\{\}\|"]+', "TEXT", None, None),
    (r'"', "QUOTE", None, None),
    (r"(\r?\n)+", "NEWLINE", None, None),
    (r"[^\S\n\r]+", "SPACE", None, None),  # 120
    (r"\Z", "EOF", None, None),
)

# Rules every state shares (Mermaid's `<*>` rules), then each state's own, in rule order.
_ANY = (21, 24, 79, 82, 84, 86, 90, 92, 96, 97, 110, 112, 114, 116)
_STATES: dict[str, tuple[int, ...]] = {
    "INITIAL": (0, 2, 4, 7, 13, 21, 24, *range(25, 33), *range(35, 45), *range(56, 72), 73, 74, 76, 77, 79,
                82, 84, 86, 87, 88, 90, 92, 96, 97, *range(98, 109), 110, 112, 114, 116, 118, 119, 120, 121),
    "text": (21, 24, 79, 82, 83, 84, 85, 86, 89, 90, 91, 92, 96, 97, 109, 110, 111, 112, 113, 114, 115, 116, 117),
    "ellipseText": (21, 24, 79, 80, 81, 82, 84, 86, 90, 92, 96, 97, 110, 112, 114, 116),
    "trapText": (21, 24, 79, 82, 84, 86, 90, 92, 93, 94, 95, 96, 97, 110, 112, 114, 116),
    "edgeText": (21, 24, 70, 72, *_ANY[2:]),
    "thickEdgeText": (21, 24, 73, 75, *_ANY[2:]),
    "dottedEdgeText": (21, 24, 76, 78, *_ANY[2:]),
    "string": (21, 22, 23, 24, *_ANY[2:]),
    "md_string": (19, 20, *_ANY),
    "dir": (21, 24, *range(45, 56), *_ANY[2:]),
    "click": (21, 24, 33, 34, *_ANY[2:]),
    "callbackname": (14, 15, 16, *_ANY),
    "callbackargs": (17, 18, *_ANY),
    "shapeData": (8, 11, 12, *_ANY),
    "shapeDataStr": (9, 10, *_ANY),
    "acc_title": (1, *_ANY),
    "acc_descr": (3, *_ANY),
    "acc_descr_multiline": (5, 6, *_ANY),
}
_COMPILED = tuple(re.compile(rx, re.ASCII if r"\b" in rx else 0) for rx, _, _, _ in _RULES)

# What closes what a rule opened, for "never closed" errors: rule -> (what, closer).
_CLOSERS = {
    4: ("`accDescr {`", "`}`"),
    7: ("`@{`", "`}`"),
    8: ("a quoted string", '`"`'),
    21: ("a markdown string", '`` `" ``'),
    24: ("a quoted string", '`"`'),
    71: ("the link text after `--`", "the rest of the arrow, such as `-->`"),
    74: ("the link text after `==`", "the rest of the arrow, such as `==>`"),
    77: ("the link text after `-.`", "the rest of the arrow, such as `.->`"),
    82: ("the label `(-`", "`-)`"),
    84: ("the label `([`", "`])`"),
    86: ("the label `[[`", "`]]`"),
    88: ("the label `>`", "`]`"),
    90: ("the label `[(`", "`)]`"),
    92: ("the label `(((`", "`)))`"),
    96: ("the label `[/`", "`/]` or `\\]`"),
    97: ("the label `[\\`", "`\\]` or `/]`"),
    110: ("the link text `|`", "`|`"),
    112: ("the label `(`", "`)`"),
    114: ("the label `[`", "`]`"),
    116: ("the label `{`", "`}`"),
}


def lex(text: str) -> list[Token]:
    """Mermaid's tokens for preprocessed text, ending with ``$end``; raises :class:`LexError`."""
    toks: list[Token] = []
    stack = ["INITIAL"]
    opened: list[tuple[int, int]] = [(0, -1)]  # (offset, rule) that pushed each state
    first_graph = True
    pos, n = 0, len(text)
    while True:
        state = stack[-1]
        at_end = pos >= n
        depth = len(stack)
        for idx in _STATES[state]:
            m = _COMPILED[idx].match(text, pos)
            if m is None:
                continue
            _, tok, action, target = _RULES[idx]
            value = m.group(0)
            if idx == 7:
                value = ""
            elif idx == 10:
                value = re.sub(r"\n\s*", "<br/>", value)
            if action == "push" or (action == "graph" and first_graph):
                stack.append(target or "")
                opened.append((pos, idx))
            elif action in ("pop", "pop_push"):
                if len(stack) > 1:
                    stack.pop()
                    opened.pop()
                if action == "pop_push":
                    stack.append(target or "")
                    opened.append((pos, idx))
            if action == "graph":
                first_graph = False
            if tok is not None:
                toks.append(Token(tok, value, pos))
            if m.end() == pos and not at_end and stack[-1] == state and len(stack) == depth:
                raise LexError(f"unexpected `{text[pos:pos + 20].splitlines()[0]}`", pos)
            pos = m.end()
            break
        else:
            if at_end:
                if state != "INITIAL" and state != "dir":
                    where, rule = opened[-1]
                    what, closer = _CLOSERS.get(rule, (f"`{text[where:where + 2]}`", "its end"))
                    raise LexError(f"{what} is never closed; add {closer}", where)
                break
            snippet = text[pos:pos + 20].splitlines()[0] if text[pos:pos + 20].strip() else repr(text[pos])
            raise LexError(f"unexpected `{snippet}`; check the link and label syntax", pos)
        if at_end:
            break
    toks.append(Token("$end", "", n))
    return toks


# ----------------------------------------------------------------------- preprocessing

_DIRECTIVE = re.compile(r"%{2}{\s*(?:(\w+)\s*:|(\w+))\s*(?:(\w+)|((?:(?!}%{2}).|\r?\n)*))?\s*(?:}%{2})?", re.I)
_COMMENT_LINE = re.compile(r"^\s*%%(?!{)[^\n]+\n?", re.M)


def _sub(rx: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str, origin: list[int]) -> tuple[str, list[int]]:
    """``rx.sub`` that keeps, for every character left, its offset in the original file."""
    out: list[str] = []
    org: list[int] = []
    last = 0
    for m in rx.finditer(text):
        out.append(text[last:m.start()])
        org.extend(origin[last:m.start()])
        new = repl(m)
        anchor = origin[m.start()] if m.start() < len(origin) else (origin[-1] if origin else 0)
        out.append(new)
        org.extend([anchor] * len(new))
        last = m.end()
    out.append(text[last:])
    org.extend(origin[last:])
    return "".join(out), org


def _front_matter(text: str) -> tuple[int, str]:
    """Length and body of a leading ``---`` YAML block (Mermaid's rules), or ``(0, "")``."""
    m = re.match(r"([^\S\n\r]*)---[^\S\n\r]*\n", text)
    if not m:
        return 0, ""
    indent = m.group(1)
    close = re.compile(r"\n" + re.escape(indent) + r"---([^\S\n]*\n)+")
    c = close.search(text, m.end() - 1)
    if not c:
        return 0, ""
    return c.end(), text[m.end():c.start()]


def preprocess(raw: str) -> tuple[str, list[int], str]:
    """What Mermaid hands its flowchart parser, each character's original offset, and the front-matter text."""
    text, origin = raw, list(range(len(raw)))
    text, origin = _sub(re.compile(r"\r\n?"), lambda m: "\n", text, origin)
    # Mermaid rewrites attribute quotes inside HTML tags (`="x"` to `='x'`); same length.
    text = re.sub(
        r"<(\w+)([^>]*)>",
        lambda m: "<" + m.group(1) + re.sub(r'="([^"]*)"', r"='\1'", m.group(2)) + ">",
        text,
    )
    length, front = _front_matter(text)
    text, origin = text[length:], origin[length:]
    text, origin = _sub(_DIRECTIVE, lambda m: "", text, origin)
    text, origin = _sub(_COMMENT_LINE, lambda m: "", text, origin)
    lead = len(text) - len(text.lstrip())
    text, origin = text[lead:], origin[lead:]
    # encodeEntities: a `;` that ends a style holding a colour is dropped; `#name;` codes are
    # kept away from the `;` separator (decoded again in labels).
    text, origin = _sub(re.compile(r"style[^\n]*:\S*#[^\n]*;"), lambda m: m.group(0)[:-1], text, origin)
    text, origin = _sub(re.compile(r"classDef[^\n]*:\S*#[^\n]*;"), lambda m: m.group(0)[:-1], text, origin)
    text, origin = _sub(
        re.compile(r"#\w+;"),
        lambda m: ("\ufb02\xb0\xb0" if re.fullmatch(r"\+?\d+", m.group(0)[1:-1]) else "\ufb02\xb0")
        + m.group(0)[1:-1]
        + "\xb6\xdf",
        text,
        origin,
    )
    end = len(raw)
    text, origin = text + "\n", origin + [end]
    text, origin = _sub(re.compile(r"}\s*\n"), lambda m: "}\n", text, origin)
    return text, origin, front


def decode_entities(text: str) -> str:
    """Undo the ``#name;`` encoding of :func:`preprocess` (to ``&name;`` for ``html.unescape``)."""
    return text.replace("\ufb02\xb0\xb0", "&#").replace("\ufb02\xb0", "&").replace("\xb6\xdf", ";")
