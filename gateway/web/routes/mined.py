"""The mined graph of a workflow without a flowchart: what an approval of its proposal will compile.

    GET  /dashboard/workflows/{wf}/mined.svg    the graph, drawn on the server (gateway/web/graph_svg.py)
    GET  /dashboard/workflows/{wf}/mined.yaml   the chart as a download, to read or edit
    POST /dashboard/workflows/{wf}/flowchart    attach a (reviewed, edited) chart as the workflow's flowchart
    GET  /api/workflows/{wf}/mined              fitness, coverage, conversations, nodes, the YAML (admin key)

The workflow page includes `_mined.html`, which calls the `mined_for` template global registered here.
The files come from the loop's pre-mining (gateway/loop/premine.py) in the proposal's job folder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from gateway.errors import NotFound, PermissionDenied
from gateway.loop.payback import LoopConfig
from gateway.loop.premine import attach_flowchart, attached_path, latest_mined, mined_summary
from gateway.web.deps import Admin, state
from gateway.web.graph_svg import chart_svg
from gateway.web.routes import dashboard

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", dependencies=[Admin])


def mined_for(cfg: LoopConfig, workflow: str) -> dict[str, Any] | None:
    """What the page shows: the summary of the latest mined graph, and whether a chart is attached."""
    folder = latest_mined(cfg, workflow)
    report = mined_summary(folder) if folder else None
    attached = attached_path(cfg, workflow)
    if report is None and not attached.is_file():
        return None
    return {"report": report, "folder": str(folder) if folder else None, "attached": attached.is_file(),
            "yaml": (folder / "mined" / "chart.yaml").read_text() if folder else ""}


dashboard.templates().env.globals["mined_for"] = mined_for


def _cfg(request: Request) -> LoopConfig:
    return LoopConfig.from_dict(state(request).settings.loop)


def _chart(request: Request, workflow: str) -> Path:
    if dashboard._session(request) is None:
        raise PermissionDenied("Log in at /dashboard/login with the admin key first.")
    folder = latest_mined(_cfg(request), workflow)
    if folder is None:
        raise NotFound(f"No mined graph for `{workflow}`: it is mined when a proposal opens for a workflow "
                       "without a flowchart.")
    return folder / "mined" / "chart.yaml"


@router.get("/dashboard/workflows/{workflow_id}/mined.svg")
async def mined_svg(request: Request, workflow_id: str) -> Response:
    path = _chart(request, workflow_id)
    svg = await asyncio.to_thread(lambda: chart_svg(yaml.safe_load(path.read_text()) or {}))
    return Response(svg, media_type="image/svg+xml",
                    headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


@router.get("/dashboard/workflows/{workflow_id}/mined.yaml")
async def mined_yaml(request: Request, workflow_id: str) -> Response:
    path = _chart(request, workflow_id)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in workflow_id)
    return Response(path.read_text(), media_type="application/yaml",
                    headers={"Content-Disposition": f'attachment; filename="{name}.yaml"', "Cache-Control": "no-store"})


@router.post("/dashboard/workflows/{workflow_id}/flowchart")
async def attach(request: Request, workflow_id: str, csrf: str = Form(""), chart: str = Form("")) -> Response:
    back = f"/dashboard/workflows/{quote(workflow_id)}"
    cfg = _cfg(request)
    return await dashboard._act(request, csrf, back, lambda: attach_flowchart(cfg, workflow_id, chart), "mined")


@api.get("/workflows/{workflow_id}/mined")
async def mined_api(request: Request, workflow_id: str) -> dict[str, Any]:
    found = await asyncio.to_thread(mined_for, _cfg(request), workflow_id)
    if found is None:
        raise NotFound(f"No mined graph for `{workflow_id}`: it is mined when a proposal opens for a workflow "
                       "without a flowchart.")
    return found
