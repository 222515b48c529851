"""A flowchart (tiergate's YAML, as plain data) drawn as SVG on the server: no CDN, no script.

    svg = chart_svg(yaml.safe_load(path.read_text()))

Layers by distance from the start (breadth first); within a layer, nodes in first-seen order. An edge
going down is a straight line; one going back up (a loop) or sideways is a curve on the right, dashed.
Node shapes by kind: agent (rounded box), tool (box), decision (diamond-ish, small), start/terminal
(pill). Every label is escaped; the text is the node id (the step's own name, or its telling words).
"""

from __future__ import annotations

from collections import deque
from html import escape
from typing import Any

BOX_W, BOX_H, GAP_X, GAP_Y = 150, 30, 24, 40
COLORS = {"agent": "#e8f0fe", "tool": "#fef3e0", "decision": "#f1f3f4", "start": "#e6f4ea", "terminal": "#fce8e6"}


def _layers(nodes: dict[str, Any], edges: list[dict[str, Any]], start: str) -> dict[str, int]:
    succ: dict[str, list[str]] = {}
    for e in edges:
        succ.setdefault(str(e.get("from")), []).append(str(e.get("to")))
    depth = {start: 0}
    queue = deque([start])
    while queue:
        n = queue.popleft()
        for m in succ.get(n, []):
            if m not in depth:
                depth[m] = depth[n] + 1
                queue.append(m)
    last = max(depth.values(), default=0)
    for n in nodes:  # unreachable nodes (should not happen in a checked chart) go at the bottom
        depth.setdefault(n, last + 1)
    return depth


def chart_svg(chart: dict[str, Any]) -> str:
    nodes: dict[str, Any] = dict(chart.get("nodes") or {})
    edges: list[dict[str, Any]] = [e for e in chart.get("edges") or [] if isinstance(e, dict)]
    start = str(chart.get("start") or next(iter(nodes), "start"))
    depth = _layers(nodes, edges, start)
    rows: dict[int, list[str]] = {}
    for n in nodes:
        rows.setdefault(depth[n], []).append(n)
    widest = max((len(r) for r in rows.values()), default=1)
    width = widest * (BOX_W + GAP_X) + GAP_X + 60
    height = (max(rows, default=0) + 1) * (BOX_H + GAP_Y) + GAP_Y
    pos: dict[str, tuple[float, float]] = {}
    for d, names in rows.items():
        offset = (width - 60 - len(names) * (BOX_W + GAP_X)) / 2
        for i, n in enumerate(names):
            pos[n] = (offset + GAP_X / 2 + i * (BOX_W + GAP_X), GAP_Y / 2 + d * (BOX_H + GAP_Y))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
           f'height="{height:.0f}" font-family="sans-serif" font-size="11" role="img" '
           f'aria-label="{escape(str(chart.get("name", "flowchart")))}">',
           '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" '
           'orient="auto"><path d="M0,0L10,5L0,10z" fill="#666"/></marker></defs>']
    for e in edges:
        a, b = str(e.get("from")), str(e.get("to"))
        if a not in pos or b not in pos:
            continue
        (x1, y1), (x2, y2) = pos[a], pos[b]
        if depth[b] > depth[a]:
            out.append(f'<line x1="{x1 + BOX_W / 2:.0f}" y1="{y1 + BOX_H:.0f}" x2="{x2 + BOX_W / 2:.0f}" y2="{y2:.0f}" '
                       'stroke="#666" marker-end="url(#a)"/>')
        else:
            sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H / 2, x2 + BOX_W, y2 + BOX_H / 2
            bend = max(sx, ex) + 30 + 6 * abs(depth[a] - depth[b])
            out.append(f'<path d="M{sx:.0f},{sy:.0f} C{bend:.0f},{sy:.0f} {bend:.0f},{ey:.0f} {ex:.0f},{ey:.0f}" '
                       'fill="none" stroke="#999" stroke-dasharray="4 3" marker-end="url(#a)"/>')
    for n, spec in nodes.items():
        x, y = pos[n]
        kind = str((spec or {}).get("kind", "agent"))
        rx = {"agent": 6, "start": 15, "terminal": 15, "decision": 2}.get(kind, 0)
        label = n if len(n) <= 24 else n[:23] + "…"
        out.append(f'<g class="node {escape(kind)}" data-node="{escape(n)}"><title>{escape(n)} ({escape(kind)}): '
                   f'{escape(str((spec or {}).get("text", ""))[:200])}</title>'
                   f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="{rx}" '
                   f'fill="{COLORS.get(kind, "#fff")}" stroke="#555"/>'
                   f'<text x="{x + BOX_W / 2:.0f}" y="{y + BOX_H / 2 + 4:.0f}" text-anchor="middle">{escape(label)}</text></g>')
    out.append("</svg>")
    return "\n".join(out)
