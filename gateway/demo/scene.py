"""The demo's scene: its config, the simulated providers and gateway it starts, and the traffic it replays.

    ports = {"frontier": free_port(), "cheap": free_port(), "compiled": free_port(), "gateway": free_port()}
    cfg = demo_config(work, find_flowchart(), ports, conversations=60)
    convs, fc = render_traffic(find_flowchart(), n=60)
    replay(Replay(...), convs, prefix="before", label="frontier")

`gateway.demo.run.run_demo` plays the script on this scene (see its docstring for what the demo shows).
"""


from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKFLOW = "travel-booking"
FRONTIER, CHEAP, COMPILED = "gpt-4o", "gpt-4o-mini", "travel-booking-compiled"
# OpenAI's published list prices (USD per million tokens) for the models the simulations stand in for,
# and the self-hosted figure the payback uses for an 8B model on one A100.
LIST_PRICES = {FRONTIER: (2.50, 10.00), CHEAP: (0.15, 0.60), COMPILED: (0.05, 0.23)}
DEMO_COMPILE_COST = 1.00  # a scratch model trained on this machine's CPU; production default is $65
EXTRA_TOOLS = [  # what a generic orchestrator ships on every call though this workflow never uses it
    ("cancel_booking", "Cancel a booking by its reference and refund the card on file.",
     {"booking_ref": "Booking reference, e.g. BK4Q7Z", "reason": "Why the customer cancels"}),
    ("hotel_search", "Find hotels in a city for given dates, sorted by price.",
     {"city": "City name", "check_in": "Check-in date", "nights": "Number of nights", "guests": "Guests"}),
    ("loyalty_balance", "Look up the customer's loyalty points and tier status.",
     {"customer_id": "The customer's account id"}),
    ("weather_forecast", "Five-day weather forecast for a city.", {"city": "City name"}),
]


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(line: str = "") -> None:
    print(line, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether the demo's gateway can bind `port` on loopback (nothing else listens there)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def own_gateway_up(svc: Services, url: str) -> bool:
    """The demo's in-process gateway has started and answers; if it failed to bind, say so at once."""
    server, thread = getattr(svc, "server", None), getattr(svc, "thread", None)
    if server is None or thread is None or (not thread.is_alive() and not server.started):
        raise DemoError(f"The demo's gateway could not start on {url} (is the port taken?); pass `--port 0`.", code=2)
    return bool(server.started) and http_ok(f"{url}/healthz")


def find_flowchart() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        p = base / "configs" / "workflows" / f"{WORKFLOW}.yaml"
        if p.is_file():
            return p
    raise DemoError(f"cannot find configs/workflows/{WORKFLOW}.yaml; run the demo from the tiergate repository root", 2)


def compiler_ready() -> str | None:
    """None when `tiergate compile` can run here, else why not."""
    if importlib.util.find_spec("compiler.cli") is None or importlib.util.find_spec("compiler.render") is None:
        return "the compiler package (compiler/) is not installed"
    for mod in ("torch", "transformers", "trl"):
        if importlib.util.find_spec(mod) is None:
            return f"`{mod}` is missing; install the compile extra: pip install -e '.[compile]'"
    return None


def render_traffic(flowchart: Path, n: int, seed: int = 7) -> tuple[list[dict[str, Any]], Any]:
    """`n` conversations rendered from the flowchart (another seed than the compiler's training data)."""
    if importlib.util.find_spec("compiler.render") is None:
        raise DemoError("the compiler package is not installed: it renders the demo's conversations", 2)
    from compiler.flowchart import check
    from compiler.formats import load_flowchart
    from compiler.paths import enumerate_paths
    from compiler.render import render_offline

    fc = check(load_flowchart(flowchart))
    paths = enumerate_paths(fc, max_loops=1, budget=200, seed=seed).paths
    out: list[dict[str, Any]] = []
    variant = 0
    while len(out) < n:
        for p in paths:
            out.append(render_offline(fc, p, seed=seed, variant=variant))
            if len(out) == n:
                break
        variant += 1
    return out, fc


def toolbox(fc: Any) -> list[dict[str, Any]]:
    tools = [dict(t) for t in fc.tools]
    for name, desc, props in EXTRA_TOOLS:
        tools.append({"type": "function", "function": {
            "name": name, "description": desc,
            "parameters": {"type": "object", "properties": {k: {"type": "string", "description": v}
                                                            for k, v in props.items()},
                           "required": list(props)}}})
    return tools


def demo_config(work: Path, flowchart: Path, ports: dict[str, int], conversations: int,
                compile_args: list[str], compile_command: tuple[str, ...] = (),
                serve_command: tuple[str, ...] = (), compile_cost: float = DEMO_COMPILE_COST) -> dict[str, Any]:
    def model(name: str, port: int, upstream: str, simulated: bool) -> dict[str, Any]:
        inp, outp = LIST_PRICES[name]
        return {"name": name, "upstream": upstream, "api_base": f"http://127.0.0.1:{port}/v1", "max_retries": 1,
                "timeout": 120, "simulated": simulated,
                "price": {"input_per_million": inp, "output_per_million": outp}}

    return {
        "server": {"host": "127.0.0.1", "port": ports["gateway"], "log_level": "warning",
                   "state_refresh_seconds": 1.0},
        "storage": {"url": f"sqlite:///{work / 'tiergate.db'}"},
        "ledger": {"flush_interval_ms": 50},
        "models": [
            model(FRONTIER, ports["frontier"], "openai/gpt-4o", True),
            model(CHEAP, ports["cheap"], "openai/gpt-4o-mini", True),
            model(COMPILED, ports["compiled"], f"openai/{WORKFLOW}", False),
        ],
        "workflows": [{
            "name": WORKFLOW, "frontier": FRONTIER, "cheap": CHEAP, "flowchart": str(flowchart),
            # confirmations and goodbyes are easy turns: the cheap model takes them
            "route": {"kind": "rules", "default": "frontier", "rules": [
                {"last_user_pattern": r"(?i)^\s*(yes|no|sure|perfect|sounds good|thanks|thank you|ok)\b",
                 "route": "cheap"}]},
            "trim": {"tools": True, "min_requests": 30, "holdout": 0.0},
        }],
        "loop": {
            "jobs_dir": str(work / "jobs"),
            "compile_args": compile_args,
            "compile_command": list(compile_command),
            "serve_command": list(serve_command),
            "compile_cost_usd": compile_cost,
            "min_conversations": min(500, max(10, conversations // 2)),
            "stability_window_s": 0,  # the demo's traffic is minutes old; production waits a week
            "poll_interval_s": 0.5,
            "threshold_interval_s": 1.0,
            "compiled_models": {WORKFLOW: COMPILED},
            "canary_share": 0.5,
            "promote_after": 8,
            "min_samples": 4,
            "compare_share": 0.5,
            "compiled_compare_share": 0.05,
            "min_quality": 0.7,
            "max_error_rate": 0.2,
        },
    }


@dataclass
class TierStats:
    requests: int = 0
    score: float = 0.0

    @property
    def quality(self) -> float | None:
        return self.score / self.requests if self.requests else None


@dataclass
class Replay:
    """The demo's app: sends each conversation turn by turn, scores each answer against the script."""

    url: str
    system: str
    tools: list[dict[str, Any]]
    tiers: dict[str, TierStats] = field(default_factory=dict)

    def conversation(self, conv: dict[str, Any], conv_id: str, client: Any) -> None:
        from gateway.proxy.learn import word_overlap

        msgs = conv["messages"]
        for i, m in enumerate(msgs):
            if m.get("role") != "assistant":
                continue
            body = {"model": FRONTIER, "messages": [{"role": "system", "content": self.system}, *msgs[1:i]],
                    "tools": self.tools}
            r = client.post(f"{self.url}/v1/chat/completions", json=body,
                            headers={"X-Tiergate-Workflow": WORKFLOW, "X-Tiergate-Conversation": conv_id})
            tier = r.headers.get("x-tiergate-tier", "error")
            stats = self.tiers.setdefault(tier, TierStats())
            stats.requests += 1
            if r.status_code != 200:
                continue
            got = (r.json().get("choices") or [{}])[0].get("message") or {}
            if m.get("tool_calls"):
                want = sorted((c["function"]["name"], json.dumps(_args(c), sort_keys=True)) for c in m["tool_calls"])
                have = sorted((c["function"]["name"], json.dumps(_args(c), sort_keys=True))
                              for c in got.get("tool_calls") or ())
                stats.score += 1.0 if want == have else 0.0
            else:
                stats.score += word_overlap(str(m.get("content") or ""), str(got.get("content") or ""))
            # an orchestrator keeps its own script; the next turn goes on from the expected answer


def _args(call: dict[str, Any]) -> Any:
    raw = call["function"].get("arguments")
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw


class Services:
    """Processes and threads the demo starts; `close()` ends them all, newest first."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start_gateway(self, settings: Any) -> Any:
        import uvicorn

        from gateway.web.app import create_app, wire

        app = create_app(settings)
        wire(app)
        config = uvicorn.Config(app, host="127.0.0.1", port=settings.server.port, log_level="warning",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="tiergate-gateway", daemon=True)
        self.thread.start()
        return app

    def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
            if self.thread is not None:
                self.thread.join(30)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_until(what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def phase_numbers(engine: Any, since: float, until: float) -> dict[str, float]:
    """Cost per conversation in a window, from the ledger (comparison calls included: they are spend)."""
    from sqlalchemy import and_, case, func, select

    from gateway.store.schema import requests as R

    with engine.connect() as conn:
        row = conn.execute(select(
            func.coalesce(func.sum(R.c.cost_usd), 0.0),
            func.coalesce(func.sum(R.c.baseline_cost_usd), 0.0),
            func.coalesce(func.sum(case((and_(R.c.turn == 1, R.c.tier != "shadow"), 1), else_=0)), 0),
            func.coalesce(func.sum(case((R.c.tier == "shadow", R.c.cost_usd), else_=0.0)), 0.0),
        ).where(R.c.workflow == WORKFLOW, R.c.ts >= since, R.c.ts < until)).one()
    conv = max(1, int(row[2]))
    return {"cost": row[0] / conv, "baseline": row[1] / conv, "conversations": int(row[2]), "checks": row[3] / conv}


class LiveTraffic:
    """The app keeps sending conversations in a thread while the demo waits for the compile and the canary.

    The loop's canary and promotion act on live traffic, as in production: the moment the compiled model
    is ready, the next conversations reach it. ``pause_s`` between conversations keeps the CPU for the
    training while there is nothing to measure yet; ``go_faster`` drops it once the canary runs.

        live = LiveTraffic(rep, convs, start=sent, prefix="live", pause_s=2.0).start()
        ...; sent = live.stop()
    """

    def __init__(self, rep: Replay, convs: list[dict[str, Any]], start: int, prefix: str, pause_s: float) -> None:
        self.rep, self.convs, self.next, self.prefix = rep, convs, start, prefix
        self.pause_s = pause_s
        self.sent = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-live-traffic", daemon=True)

    def start(self) -> LiveTraffic:
        self._thread.start()
        return self

    def go_faster(self) -> None:
        self.pause_s = 0.0

    def _run(self) -> None:
        import httpx

        try:
            with httpx.Client(timeout=300) as client:
                while not self._stop.is_set() and self.next < len(self.convs):
                    self.rep.conversation(self.convs[self.next], f"{self.prefix}-{self.next}", client)
                    self.next += 1
                    self.sent += 1
                    self._stop.wait(self.pause_s)
        except Exception as exc:  # the demo reports it; a dead replay thread must not hang the demo
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> int:
        """Stops after the conversation in flight; returns the index of the next unsent conversation."""
        self._stop.set()
        self._thread.join(300)
        return self.next


def replay(rep: Replay, convs: list[dict[str, Any]], prefix: str, label: str, stop: Callable[[], bool] | None = None) -> int:
    import httpx

    done = 0
    step = max(1, len(convs) // 5)
    with httpx.Client(timeout=300) as client:
        for i, conv in enumerate(convs):
            rep.conversation(conv, f"{prefix}-{i}", client)
            done += 1
            if done % step == 0 or done == len(convs):
                say(f"  {label}: {done}/{len(convs)} conversations")
            if stop is not None and stop():
                break
    return done


