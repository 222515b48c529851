"""Seeded random flowcharts for the differential tests: Mermaid and DOT variations.

Each generator draws from the whole grammar the importers claim (every shape, label
style, link form, statement kind), with labels full of punctuation and line breaks, so
that the reference parser and tiergate's see the odd corners teams' charts have. Most
charts are valid; some are broken on purpose (an unclosed label, a dangling link) so the
tests also see both parsers refuse the same charts.

Example::

    rng = random.Random(7)
    text = random_mermaid(rng)
"""

from __future__ import annotations

import random

WORDS = (
    "ask the customer for order number refund policy check account email escalate done "
    "billing login bug invoice verify identity retry offer transfer human agent resolve close "
    "Paris Zürich naïve café 30 days #1 v2 FAQ"
).split()
PUNCT = list(",.:;!?'*+=&%$@~^_/") + [" - ", " -- x", "#quot;", "#35;", "<br>", "<b>bold</b>", "\n"]

# Mermaid: (opener, closer, characters a plain label may not hold there)
M_SHAPES = [
    ("[", "]", '[](){}|"'), ("(", ")", '[](){}|"'), ("([", "])", '[](){}|"'), ("[[", "]]", '[](){}|"'),
    ("[(", ")]", '[](){}|"'), ("((", "))", '[](){}|"'), ("(((", ")))", '[](){}|"'), ("{", "}", '[](){}|"'),
    ("{{", "}}", '[](){}|"'), (">", "]", '[](){}|"'), ("[/", "/]", '[](){}|"\\/'), ("[\\", "\\]", '[](){}|"\\/'),
    ("[/", "\\]", '[](){}|"\\/'), ("[\\", "/]", '[](){}|"\\/'), ("(-", "-)", '[](){}|"-'),
]
M_AT_SHAPES = ["rect", "rounded", "stadium", "subproc", "cyl", "circle", "diam", "hex", "lean-r", "trap-t",
               "dbl-circ", "doc", "fork", "odd", "sm-circ", "fr-circ", "bolt", "tri"]
M_LINKS = ["-->", "---", "-.->", "-.-", "==>", "===", "--o", "--x", "<-->", "o--o", "x--x", "<-.->",
           "<==>", "~~~", "--->", "----->", "-..->", "====>", "-...-"]
M_TEXT_LINKS = [("--", "-->"), ("-.", ".->"), ("==", "==>"), ("--", "---"), ("<--", "-->"), ("-.", ".-")]


def _words(rng: random.Random, lo: int = 1, hi: int = 6) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]


def _phrase(rng: random.Random, banned: str, breaks: bool = True) -> str:
    parts = _words(rng)
    for _ in range(rng.randint(0, 3)):
        p = rng.choice(PUNCT)
        if (p == "\n" and not breaks) or any(c in banned for c in p):
            continue
        parts.insert(rng.randrange(len(parts) + 1), p)
    text = " ".join(parts).replace(" \n ", "\n    ")
    return text.strip() or "x"


def _mermaid_id(rng: random.Random, i: int) -> str:
    return rng.choice([f"n{i}", f"step_{i}", f"N{i}x", f"s-{i}", f"{i}", f"é{i}", f"node.{i}"])


def _mermaid_node(rng: random.Random, nid: str, defined: set[str]) -> str:
    r = rng.random()
    if nid in defined and r < 0.6:
        return nid
    defined.add(nid)
    if r < 0.12:
        return nid
    if r < 0.22:
        label = _phrase(rng, '"', breaks=False).replace("\n", " ")
        return f'{nid}@{{ shape: {rng.choice(M_AT_SHAPES)}, label: "{label}" }}'
    opener, closer, banned = rng.choice(M_SHAPES)
    style = rng.random()
    if style < 0.25:
        label = '"' + _phrase(rng, '"') + '"'
    elif style < 0.35:
        label = '"`' + _phrase(rng, '"`') + '`"'
    else:
        label = _phrase(rng, banned)
        if opener in ("(-",) or closer.startswith(("/", "\\")):
            label = label.replace("\n", " ")
    return f"{nid}{opener}{label}{closer}"


def _mermaid_link(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return f" {rng.choice(M_LINKS)} "
    if r < 0.75:
        text = _phrase(rng, '|"()[]{}', breaks=False).replace("\n", " ")
        if rng.random() < 0.3:
            text = '"' + _phrase(rng, '"', breaks=False) + '"'
        return f" {rng.choice(['-->', '-.->', '==>', '---', '--x'])}|{text}| "
    start, end = rng.choice(M_TEXT_LINKS)
    text = " ".join(_words(rng, 1, 4))
    if rng.random() < 0.3:
        text = '"' + _phrase(rng, '"', breaks=False) + '"'
    return f" {start} {text} {end} "


def random_mermaid(rng: random.Random) -> str:
    """One chart: header, node and link statements, groups, subgraphs, styling lines, comments."""
    lines: list[str] = []
    if rng.random() < 0.15:
        lines += ["---", f"title: chart {rng.randint(1, 99)}", "---"]
    if rng.random() < 0.15:
        lines.append('%%{init: {"theme": "neutral"}}%%')
    header = rng.choice(["flowchart", "graph"]) + rng.choice(["", " TD", " TB", " LR", " RL", " BT"])
    lines.append(header)
    n = rng.randint(2, 9)
    ids = [_mermaid_id(rng, i) for i in range(n)]
    defined: set[str] = set()
    links = 0
    open_subgraphs = 0
    for _ in range(rng.randint(2, 10)):
        r = rng.random()
        if r < 0.08:
            lines.append(f"    %% {_phrase(rng, '', breaks=False)}")
            continue
        if r < 0.14 and open_subgraphs < 2:
            title = rng.choice([f"sg{len(lines)}", f"sg{len(lines)} [{' '.join(_words(rng, 1, 3))}]",
                                f'"{" ".join(_words(rng, 2, 3))}"'])
            lines.append(f"    subgraph {title}")
            open_subgraphs += 1
            continue
        if r < 0.2 and open_subgraphs:
            lines.append("    end")
            open_subgraphs -= 1
            continue
        if r < 0.26:
            target = rng.choice(ids)
            lines.append(rng.choice([
                "    classDef hot fill:#f96,stroke:#333,stroke-width:2px",
                f"    class {target} hot",
                f"    style {target} fill:#bbf,stroke:#f66",
                f'    click {target} "https://example.com" "tip"',
                f"    click {target} callback",
            ] + ([f"    linkStyle {rng.randrange(links)} stroke:#f00"] if links else [])))
            continue
        # a statement: a chain of groups joined by links
        parts = []
        width = rng.choice([1, 1, 1, 2, 3])
        for k in range(rng.randint(1, 3)):
            group = [_mermaid_node(rng, rng.choice(ids), defined) for _ in range(width if k else 1)]
            parts.append(" & ".join(group))
        stmt = parts[0]
        for prev, part in zip(parts, parts[1:], strict=False):
            stmt += _mermaid_link(rng) + part
            links += (prev.count(" & ") + 1) * (part.count(" & ") + 1)
        if rng.random() < 0.15:
            stmt += ":::hot" if not stmt.endswith("}") else ""
        sep = rng.choice(["", "", ";"])
        lines.append("    " + stmt + sep)
    lines += ["    end"] * open_subgraphs
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.08:  # broken on purpose
        text = rng.choice([text.replace("]", "", 1), text + "    dangling -->\n", text.replace("-->", "->", 1)])
    return text


# ------------------------------------------------------------------------------- DOT

D_SHAPES = ["box", "ellipse", "oval", "diamond", "box3d", "component", "cds", "doublecircle", "Mdiamond",
            "Msquare", "circle", "hexagon", "note", "plaintext", "rect", "point", "egg", "tab", "folder"]


def _dot_id(rng: random.Random, i: int) -> str:
    return rng.choice([f"n{i}", f"step_{i}", f'"node {i}"', f'"id, with: punct {i}"', f"{i}", f"-{i}.5",
                       f"é{i}", f'"{i}"'])


def _dot_label(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.2:
        tag = rng.choice(["b", "i", ""])
        inner = " ".join(_words(rng)) + rng.choice(["<br/>", " "]) + " ".join(_words(rng, 1, 2))
        return "<" + (f"<{tag}>{inner}</{tag}>" if tag else inner).replace("&", "&amp;") + ">"
    text = _phrase(rng, '"\\<', breaks=False).replace("\n", " ")
    text = text.replace("<br>", "\\n").replace("<b>bold</b>", "bold")
    if r < 0.3:
        return f'"{text[: len(text) // 2]}" + "{text[len(text) // 2:]}"'
    if r < 0.4:
        return '"' + text + '\\lsecond line\\l"'
    return '"' + text.replace('"', "") + '"'


def _dot_attrs(rng: random.Random, edge: bool = False) -> str:
    items = []
    if rng.random() < 0.7:
        items.append(f"label={_dot_label(rng)}" if not edge or rng.random() < 0.7 else f"xlabel={_dot_label(rng)}")
    if not edge and rng.random() < 0.6:
        items.append(f"shape={rng.choice(D_SHAPES)}")
    if rng.random() < 0.3:
        items.append(rng.choice(['color="#ff0000"', "style=dashed", "penwidth=2", 'fontname="Helvetica"']))
    if not items:
        return ""
    return " [" + rng.choice([", ", "; ", " "]).join(items) + "]"


def random_dot(rng: random.Random) -> str:
    """One DOT graph: defaults, attribute statements, subgraphs and clusters, chains, ports, comments."""
    directed = rng.random() < 0.85
    op = " -> " if directed else " -- "
    n = rng.randint(2, 9)
    ids = [_dot_id(rng, i) for i in range(n)]
    lines = [("strict " if rng.random() < 0.2 else "") + ("digraph" if directed else "graph")
             + rng.choice(["", " G", ' "my flow"']) + " {"]
    depth = 0
    for _ in range(rng.randint(2, 12)):
        r = rng.random()
        pad = "  " * (depth + 1)
        if r < 0.08:
            lines.append(pad + rng.choice(["// a line comment", "/* a block\n   comment */", "# hash comment"]))
        elif r < 0.14:
            lines.append(pad + rng.choice(["node [shape=box]", "edge [color=grey]", "graph [rankdir=LR]",
                                           "rankdir=LR", 'label="A title"', f"node{_dot_attrs(rng)}"]))
        elif r < 0.2 and depth < 2:
            lines.append(pad + rng.choice(["subgraph cluster_" + str(len(lines)) + " {", "subgraph {", "{",
                                           f"subgraph s{len(lines)} {{"]))
            depth += 1
            if rng.random() < 0.5:
                lines.append(pad + "  label=" + _dot_label(rng) + ";")
        elif r < 0.26 and depth:
            lines.append(pad[:-2] + "}")
            depth -= 1
        elif r < 0.5:
            lines.append(pad + rng.choice(ids) + _dot_attrs(rng) + rng.choice(["", ";"]))
        else:
            chain = []
            for _k in range(rng.randint(2, 4)):
                if rng.random() < 0.15:
                    chain.append("{" + " ".join(rng.sample(ids, min(2, len(ids)))) + "}")
                else:
                    nid = rng.choice(ids)
                    if rng.random() < 0.15:
                        nid += rng.choice([":p1", ":p1:n", ":e", ":sw"])
                    chain.append(nid)
            lines.append(pad + op.join(chain) + _dot_attrs(rng, edge=True) + rng.choice(["", ";"]))
    lines += ["  " * d + "}" for d in range(depth, 0, -1)]
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.06:  # broken on purpose
        text = rng.choice([text[:-3], text.replace(op.strip(), op.strip() + " ;", 1), text.replace("[", "[[", 1)])
    return text
