"""The savings dashboard at /dashboard: Jinja2 pages, admin-key login, CSRF-protected POST actions.

    GET  /dashboard                      overview: spend, baseline, savings by rung, workflows table
    GET  /dashboard/workflows/{id}       charts, tokens, routing share, proposal, job, canary, rollback
    POST /dashboard/login                form field `key`: the admin key -> HttpOnly session cookie
    POST /dashboard/proposals/{id}/approve | reject,  POST /dashboard/workflows/{id}/rollback

Why a signed cookie and a token per form: the admin key never sits in the browser after login (the
cookie holds a time and an HMAC keyed by it, so rotating the key logs everyone out), and a page on
another site cannot make the browser approve anything: every POST carries a token derived from the
session that such a page cannot read, the cookie is SameSite=Strict, and a foreign Origin is refused.
Everything shown is aggregated in SQL; the browser gets a few hundred numbers, never ledger rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlparse

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, and_, case, func, select

from gateway.errors import GatewayError, PermissionDenied
from gateway.loop import canary
from gateway.loop.jobs import get_job, list_jobs
from gateway.loop.payback import LoopConfig
from gateway.loop.proposals import approve, list_proposals, reject, workflow_statuses
from gateway.loop.rollup import totals
from gateway.loop.rungstatus import RUNG_TITLES, rung_status
from gateway.store.money import REASON, is_client, savings_by_rung, usd
from gateway.store.schema import requests as R
from gateway.store.schema import route_labels
from gateway.web.deps import state

router = APIRouter(prefix="/dashboard", include_in_schema=False)
COOKIE = "tg_dashboard"
# the rungs of "where the money went", in the order shown (definitions: gateway/store/money.py)
RUNG_NAMES = {"routing": "routing", "trimming": "trimming", "compile": "compile",
              "shadow_labels": "shadow labels", "fallbacks": "fallbacks (no rung)"}
SESSION_S = 12 * 3600


@cache
def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(resources.files("gateway.web").joinpath("templates")))
    t.env.filters["usd"] = usd
    t.env.filters["num"] = lambda v: f"{int(v or 0):,}"
    t.env.filters["pct"] = lambda v: "-" if v is None else f"{float(v) * 100:.1f}%"
    t.env.filters["ago"] = lambda ts: "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    t.env.filters["tojson_attr"] = lambda v: json.dumps(v, default=str)
    t.env.filters["rung_series"] = lambda rungs: json.dumps([[name, rungs[key]] for key, name in RUNG_NAMES.items()])
    return t


# ---------------------------------------------------------------------- session and CSRF


def _secret(request: Request) -> bytes:
    key = state(request).settings.admin_key
    if key:
        return hashlib.sha256(b"tiergate-dashboard:" + key.encode()).digest()
    app_state = request.app.state
    if not hasattr(app_state, "dashboard_secret"):
        app_state.dashboard_secret = secrets.token_bytes(32)  # open mode: per-process secret
    return app_state.dashboard_secret  # type: ignore[no-any-return]


def _sign(secret: bytes, msg: str) -> str:
    return hmac.new(secret, msg.encode(), hashlib.sha256).hexdigest()


def _session(request: Request) -> str | None:
    """The valid session value, or None. Open mode (no admin key) is always logged in."""
    secret = _secret(request)
    if state(request).settings.admin_key is None:
        return "open"
    raw = request.cookies.get(COOKIE, "")
    issued, _, sig = raw.partition(".")
    if not issued.isdigit() or not hmac.compare_digest(sig, _sign(secret, "session:" + issued)):
        return None
    if time.time() - int(issued) > SESSION_S:
        return None
    return raw


def csrf_token(request: Request, session: str) -> str:
    return _sign(_secret(request), "csrf:" + session)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None  # browsers send Origin on POST; "null" is an opaque (hostile) origin
    return urlparse(origin).netloc == request.headers.get("host")


def _check_post(request: Request, token: str) -> str:
    session = _session(request)
    if session is None:
        raise PermissionDenied("Log in at /dashboard/login with the admin key first.")
    if not _same_origin(request):
        raise PermissionDenied("Cross-site request refused: post the dashboard's forms from the dashboard itself.")
    if not hmac.compare_digest(token or "", csrf_token(request, session)):
        raise PermissionDenied("The form's CSRF token is missing or stale; reload the page and try again.")
    return session


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/login?next={quote(request.url.path)}", status_code=303)


def _render(request: Request, name: str, session: str, **ctx: Any) -> HTMLResponse:
    st = state(request)
    sims = [m for m in st.settings.models if m.simulated]
    return templates().TemplateResponse(
        request,
        name,
        {"csrf": csrf_token(request, session), "simulated": sims, "open_mode": st.settings.admin_key is None,
         "now": time.time(), "rung_names": RUNG_NAMES, "action_error": _action_error(request), **ctx},
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
                 "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:"},
    )


@router.get("/login")
async def login_page(request: Request, next: str = "/dashboard", error: str | None = None) -> Response:
    if _session(request) is not None and state(request).settings.admin_key is not None and not error:
        return RedirectResponse(_safe_next(next), status_code=303)
    return templates().TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": error, "simulated": [], "csrf": ""},
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


def _safe_next(nxt: str) -> str:
    return nxt if nxt.startswith("/dashboard") and "//" not in nxt else "/dashboard"


@router.post("/login")
async def login(request: Request, key: str = Form(""), next: str = Form("/dashboard")) -> Response:
    admin = state(request).settings.admin_key
    if not _same_origin(request):
        raise PermissionDenied("Cross-site login refused: use the dashboard's own login form.")
    if admin is None:
        return RedirectResponse(_safe_next(next), status_code=303)
    if not hmac.compare_digest(key.encode(), admin.encode()):
        return RedirectResponse(f"/dashboard/login?error=1&next={quote(_safe_next(next))}", status_code=303)
    issued = str(int(time.time()))
    resp = RedirectResponse(_safe_next(next), status_code=303)
    resp.set_cookie(COOKIE, f"{issued}.{_sign(_secret(request), 'session:' + issued)}", max_age=SESSION_S,
                    httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/dashboard")
    return resp


@router.post("/logout")
async def logout(request: Request, csrf: str = Form("")) -> Response:
    _check_post(request, csrf)
    resp = RedirectResponse("/dashboard/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/dashboard")
    return resp


# ---------------------------------------------------------------------- queries (SQL aggregates)


def overview_numbers(engine: Engine, workflow: str | None = None) -> dict[str, Any]:
    """Spend, baseline and savings by rung (all workflows, or one), from the hourly rollup plus the live tail.

    The ledger's baseline is the requested model on the untrimmed prompt, so savings = baseline - spend;
    each rung's share is defined once, in gateway/store/money.py, which /api/workflows uses too.
    """
    rows = totals(engine, ("tier",), workflow=workflow)  # `tier`: the row's kind (money.KIND)
    spend = sum(r["cost"] for r in rows)
    baseline = sum(r["baseline"] for r in rows)
    savings = baseline - spend
    rungs = savings_by_rung({"kind": r["tier"], **r} for r in rows)
    return {"spend": spend, "baseline": baseline, "savings": savings,
            "ratio": savings / baseline if baseline else 0.0, "rungs": rungs,
            "requests": sum(r["requests"] for r in rows if is_client(r["tier"]))}


def workflow_table(engine: Engine) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in totals(engine, ("workflow", "tier")):
        w = out.setdefault(r["workflow"], {"requests": 0, "conversations": 0, "cost": 0.0, "baseline": 0.0,
                                           "last_seen": r["last_ts"]})
        w["cost"] += r["cost"]
        w["baseline"] += r["baseline"]
        w["last_seen"] = max(w["last_seen"], r["last_ts"])
        if is_client(r["tier"]):
            w["requests"] += r["requests"]
            w["conversations"] += r["conversations"]
    return out


def workflow_series(engine: Engine, workflow: str, buckets: int = 40) -> dict[str, Any]:
    """Cost and volume over time, tokens and the routing share of one workflow.

    Spans over two days come hourly from the rollup; shorter ones (a demo, a new workflow) are
    bucketed from the ledger through its (workflow, ts) index.
    """
    by_tier = totals(engine, ("tier",), workflow=workflow)
    if not by_tier:
        return {"points": [], "tiers": [], "tokens": {}, "reasons": [], "tools": [], "labels": {"n": 0, "good": 0}}
    lo = min(t["first_ts"] for t in by_tier)
    hi = max(t["last_ts"] for t in by_tier)
    keys = ("requests", "conversations", "cost", "baseline")
    if hi - lo > 2 * 86400:
        hours = sorted(totals(engine, ("hour",), workflow=workflow), key=lambda r: r["hour"])
        width = max(1, math.ceil(len(hours) / (buckets * 3)))  # merge hours so a chart has ~120 points at most
        points: list[dict[str, Any]] = []
        for i in range(0, len(hours), width):
            chunk = hours[i:i + width]
            points.append({"t": chunk[0]["hour"], **{k: sum(h[k] for h in chunk) for k in keys}})
    else:
        width_s = max(1.0, (hi - lo) / buckets)
        bucket = func.cast((R.c.ts - lo) / width_s, R.c.turn.type)
        stmt = (
            select(bucket.label("b"), func.count().label("requests"),
                   func.coalesce(func.sum(case((R.c.turn == 1, 1), else_=0)), 0).label("conversations"),
                   func.sum(R.c.cost_usd).label("cost"), func.sum(R.c.baseline_cost_usd).label("baseline"))
            .where(R.c.workflow == workflow).group_by(bucket).order_by(bucket)
        )
        with engine.connect() as conn:
            points = [{"t": lo + p["b"] * width_s, **{k: p[k] for k in keys}} for p in conn.execute(stmt).mappings()]
    with engine.connect() as conn:
        reasons = conn.execute(
            select(REASON.label("route_reason"), R.c.served_model, func.count().label("n"))
            .where(and_(R.c.workflow == workflow, R.c.ts >= hi - 86400, R.c.route_reason.is_not(None)))
            .group_by(REASON, R.c.served_model).order_by(func.count().desc()).limit(10)
        ).mappings().all()
        called = conn.execute(
            select(R.c.tools_called, func.count().label("n"))
            .where(and_(R.c.workflow == workflow, R.c.ts >= hi - 86400, R.c.tools_called.is_not(None)))
            .group_by(R.c.tools_called).order_by(func.count().desc()).limit(200)
        ).all()
        labels = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((route_labels.c.good, 1), else_=0)), 0))
            .where(route_labels.c.workflow == workflow)
        ).one()
        cached = conn.execute(
            select(func.coalesce(func.sum(R.c.cached_tokens), 0)).where(and_(R.c.workflow == workflow,
                                                                            R.c.ts >= hi - 86400))
        ).scalar_one()
    tokens = {
        "prompt": sum(t["prompt_ok"] for t in by_tier),
        "completion": sum(t["completion_ok"] for t in by_tier),
        "trimmed": sum(t["trimmed"] for t in by_tier),
        "errors": sum(t["errors"] for t in by_tier),
        "cached_24h": cached,
    }
    tiers = [{"tier": t["tier"], "requests": t["requests"], "cost": t["cost"], "baseline": t["baseline"]}
             for t in sorted(by_tier, key=lambda t: t["tier"])]
    tools: dict[str, int] = {}
    for names, n in called:
        for name in names.split(","):
            tools[name] = tools.get(name, 0) + n
    return {"points": points, "tiers": tiers, "tokens": tokens, "reasons": [dict(r) for r in reasons],
            "labels": {"n": int(labels[0]), "good": int(labels[1])},
            "tools": sorted(tools.items(), key=lambda kv: -kv[1])[:20]}


# ---------------------------------------------------------------------- pages


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def overview(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _login_redirect(request)
    st = state(request)
    cfg = LoopConfig.from_dict(st.settings.loop)

    def gather() -> dict[str, Any]:
        return {
            "totals": overview_numbers(st.engine),
            "table": workflow_table(st.engine),
            "statuses": {s.workflow: s.as_dict() for s in workflow_statuses(st.engine, cfg, st.settings)},
            "open_proposals": list_proposals(st.engine, "open"),
            "jobs": list_jobs(st.engine, limit=10),
            "rungs": {r["workflow"]: r["rungs"] for r in rung_status(st.engine, st.settings)},
        }

    data = await asyncio.to_thread(gather)
    rows = []
    for wf, t in sorted(data["table"].items(), key=lambda kv: -kv[1]["cost"]):
        s = data["statuses"].get(wf) or {}
        conv = t["conversations"] or 1
        rows.append({"workflow": wf, **t, "cost_per_conv": t["cost"] / conv, "baseline_per_conv": t["baseline"] / conv,
                     "mode": s.get("mode", "frontier"), "payback": s.get("payback"), "stability": s.get("stability"),
                     "proposal": s.get("proposal"), "cannot_compile": s.get("cannot_compile"),
                     "rungs": data["rungs"].get(wf, {})})
    return _render(request, "overview.html", session, totals=data["totals"], rows=rows, rung_titles=RUNG_TITLES,
                   proposals=data["open_proposals"], jobs=data["jobs"])


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
async def workflow_page(request: Request, workflow_id: str) -> Response:
    session = _session(request)
    if session is None:
        return _login_redirect(request)
    st = state(request)
    cfg = LoopConfig.from_dict(st.settings.loop)

    def gather() -> dict[str, Any]:
        statuses = workflow_statuses(st.engine, cfg, st.settings, workflow=workflow_id)
        route = canary.get_route(st.engine, workflow_id)
        metrics = canary.canary_metrics(st.engine, workflow_id, route["since"]).as_dict() if route.get("since") else None
        props = [p for p in list_proposals(st.engine) if p["workflow"] == workflow_id]
        return {
            "status": statuses[0].as_dict() if statuses else None,
            "series": workflow_series(st.engine, workflow_id),
            "route": route,
            "metrics": metrics,
            "proposals": props,
            "jobs": list_jobs(st.engine, workflow_id, limit=5),
            "money_numbers": overview_numbers(st.engine, workflow_id),
            "rungs": rung_status(st.engine, st.settings, [workflow_id])[0]["rungs"],
        }

    data = await asyncio.to_thread(gather)
    if data["status"] is None and not data["proposals"]:
        return _render(request, "missing.html", session, workflow=workflow_id)
    return _render(request, "workflow.html", session, workflow=workflow_id, cfg=cfg, rung_titles=RUNG_TITLES, **data)


@router.get("/jobs/{job_id}.json")
async def job_json(request: Request, job_id: int) -> Response:
    if _session(request) is None:
        raise PermissionDenied("Log in at /dashboard/login with the admin key first.")
    job = await asyncio.to_thread(get_job, state(request).engine, job_id)
    return JSONResponse({k: job[k] for k in ("id", "state", "progress", "error", "attempts", "updated")}
                        | {"step": (job["detail"].get("train") or {}).get("step"),
                           "max_steps": (job["detail"].get("train") or {}).get("max_steps")},
                        headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------- actions


def _who(request: Request) -> str:
    return "dashboard" + (f" ({request.client.host})" if request.client else "")


def _action_error(request: Request) -> dict[str, str] | None:
    """A failed action's message and the element it was clicked in (`proposal-3`, `rollback`)."""
    msg = request.query_params.get("error")
    return {"message": msg, "at": request.query_params.get("at", "")} if msg else None


async def _act(request: Request, csrf: str, back: str, fn: Any, at: str) -> Response:
    _check_post(request, csrf)
    try:
        await asyncio.to_thread(fn)
    except GatewayError as exc:
        if isinstance(exc, PermissionDenied):
            raise
        # back to the page, scrolled to where it was clicked, which shows the message there
        return RedirectResponse(f"{back}?error={quote(exc.message)}&at={quote(at)}#{quote(at)}", status_code=303)
    return RedirectResponse(back, status_code=303)


@router.post("/proposals/{proposal_id}/approve")
async def approve_action(request: Request, proposal_id: int, csrf: str = Form(""), back: str = Form("/dashboard")) -> Response:
    st = state(request)
    cfg = LoopConfig.from_dict(st.settings.loop)
    return await _act(request, csrf, _safe_next(back), lambda: approve(
        st.engine, proposal_id, by=_who(request), settings=st.settings, cfg=cfg), f"proposal-{proposal_id}")


@router.post("/proposals/{proposal_id}/reject")
async def reject_action(request: Request, proposal_id: int, csrf: str = Form(""), back: str = Form("/dashboard"),
                        note: str = Form("")) -> Response:
    st = state(request)
    return await _act(request, csrf, _safe_next(back), lambda: reject(
        st.engine, proposal_id, by=_who(request), note=note or None), f"proposal-{proposal_id}")


@router.post("/workflows/{workflow_id}/rollback")
async def rollback_action(request: Request, workflow_id: str, csrf: str = Form("")) -> Response:
    st = state(request)
    back = f"/dashboard/workflows/{quote(workflow_id)}"
    return await _act(request, csrf, back, lambda: canary.rollback(
        st.engine, workflow_id, reason="manual rollback from the dashboard", actor=_who(request)), "rollback")
