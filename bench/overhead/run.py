"""Gateway overhead, side by side: direct to the upstream (floor), tiergate, LiteLLM proxy, Portkey.

    python bench/overhead/run.py                      # full run: ~3 min, writes docs/bench-overhead.md
    python bench/overhead/run.py --duration 2 --targets direct,portkey --no-write   # a quick look

One invocation starts the fixed-answer upstream (bench/overhead/upstream.py) and, one after another,
each gateway in front of it, pinned to the gateway core (`taskset -c 0`), while the upstream and wrk
share the other core. Every target gets the same body (workload.py: system prompt, 3 tools, 4 user
turns), at concurrency 1 and 32, non-streaming and streaming; each cell is a short warm-up then a few
seconds of wrk. It prints added latency (p50/p99 over the floor), throughput and the ratios to
tiergate, then checks tiergate's ledger lost nothing: rows in its SQLite `requests` table after a
graceful stop (SIGTERM) against the requests wrk completed, and an exact count on a fresh instance.

A target that cannot be started (not installed, crashes, answers wrongly) is skipped, named in the
table with the reason, and the run exits 1. Install the competitors with bench/overhead/setup.sh.
Every process it started is stopped at the end, on errors and on Ctrl-C/SIGTERM too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from loadgen import LoadError, WrkStats, probe, run_wrk, send_exactly, upstream_count, write_lua
from processes import ProcessSet, StartError, free_port, wait_http
from targets import (
    HERE,
    LABELS,
    REPO,
    TARGET_NAMES,
    Context,
    Target,
    direct,
    start_litellm,
    start_portkey,
    start_tiergate,
    start_tiergate_nocapture,
)
from workload import chat_request

DOC = REPO / "docs" / "bench-overhead.md"
STARTERS = {
    "tiergate": start_tiergate,
    "tiergate-nocapture": start_tiergate_nocapture,
    "litellm": start_litellm,
    "portkey": start_portkey,
}


@dataclass(frozen=True)
class Cell:
    concurrency: int
    stream: bool

    @property
    def label(self) -> str:
        return f"c={self.concurrency} {'stream' if self.stream else 'non-stream'}"


@dataclass
class LedgerCheck:
    """Both halves of "no ledger record is lost": under the wrk load, and an exact count."""

    wrk_completed: int = 0
    in_flight_slack: int = 0
    upstream_forwarded: int = 0
    rows_after_load: int | None = None
    exact_sent: int = 0
    exact_ok: int = 0
    exact_failures: list[str] = field(default_factory=list)
    rows_exact: int | None = None
    stop_exit_code: int | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        if self.error or self.rows_after_load is None:
            return False
        low = max(self.wrk_completed, self.upstream_forwarded)
        under_load = low <= self.rows_after_load <= self.wrk_completed + self.in_flight_slack
        if self.exact_sent == 0:  # --ledger-requests 0
            return under_load
        return under_load and self.rows_exact == self.exact_sent == self.exact_ok


@dataclass
class Run:
    args: argparse.Namespace
    command: str
    started: str
    run_dir: Path
    cells: list[Cell]
    results: dict[tuple[str, Cell], WrkStats] = field(default_factory=dict)
    forwarded: dict[tuple[str, Cell], int] = field(default_factory=dict)
    cpu_us: dict[tuple[str, Cell], float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    start_s: dict[str, float] = field(default_factory=dict)
    ledger: LedgerCheck | None = None
    load_before: str = ""
    load_after: str = ""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGET_NAMES),
        help="comma-separated subset of %(default)s; `direct` is always run (it is the floor)",
    )
    parser.add_argument("--concurrency", default="1,32", help="wrk connections per cell, comma-separated")
    parser.add_argument("--modes", default="non-stream,stream", help="non-stream, stream or both")
    parser.add_argument("--duration", type=int, default=5, help="seconds of measurement per cell")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load before each cell")
    parser.add_argument("--gateway-core", type=int, default=0, help="core every gateway is pinned to")
    parser.add_argument("--load-core", type=int, default=1, help="core for the upstream, wrk and this script")
    parser.add_argument(
        "--ledger-requests",
        type=int,
        default=2000,
        help="requests sent to a fresh tiergate for the exact ledger count (0: skip)",
    )
    parser.add_argument(
        "--start-timeout", type=float, default=120.0, help="seconds a gateway may take to start"
    )
    parser.add_argument(
        "--out", type=Path, default=DOC, help="markdown file for the table (default %(default)s)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave the markdown file alone")
    return parser


def parse_cells(args: argparse.Namespace) -> list[Cell]:
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(
            f"run.py: --concurrency `{args.concurrency}` is not a list of integers; e.g. 1,32"
        ) from exc
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("non-stream", "stream")]
    if bad or not modes or not levels or min(levels) < 1:
        raise SystemExit(
            f"run.py: --modes `{args.modes}` / --concurrency `{args.concurrency}` is invalid; "
            "use e.g. --modes non-stream,stream --concurrency 1,32"
        )
    return [Cell(c, m == "stream") for m in modes for c in levels]


def parse_targets(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown:
        raise SystemExit(f"run.py: unknown target `{unknown[0]}`; choose from {', '.join(TARGET_NAMES)}")
    return ["direct"] + [n for n in TARGET_NAMES if n in names and n != "direct"]


def check_cores(args: argparse.Namespace) -> None:
    available = os.sched_getaffinity(0)
    for flag, core in (("--gateway-core", args.gateway_core), ("--load-core", args.load_core)):
        if core not in available:
            raise SystemExit(
                f"run.py: {flag} {core} is not a core this process may use ({sorted(available)}); "
                "pick one of those"
            )
    if args.gateway_core == args.load_core:
        print(
            "run.py: warning: the gateway and the load share one core; figures will be pessimistic",
            file=sys.stderr,
        )


def ledger_rows(db: Path) -> int:
    if not db.exists():
        raise LoadError(f"tiergate's ledger `{db}` does not exist after the stop; is `storage.url` honoured?")
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
        except sqlite3.OperationalError as exc:
            raise LoadError(f"tiergate's ledger `{db}` has no readable `requests` table ({exc})") from exc


def measure(run: Run, target: Target, upstream_port: int, core: int | None) -> LedgerCheck:
    """Probe, then every cell; for tiergate also collects what the ledger check needs."""
    check = LedgerCheck()
    for stream in sorted({c.stream for c in run.cells}):
        probe(target.url, target.headers, chat_request(stream), target.label)
        check.wrk_completed += 1
    for cell in run.cells:
        script = write_lua(
            run.run_dir / f"{target.name}-{'s' if cell.stream else 'n'}.lua",
            chat_request(cell.stream),
            target.headers,
        )
        if run.args.warmup > 0:
            warm = run_wrk(target.url, script, cell.concurrency, run.args.warmup, core)
            check.wrk_completed += warm.requests
            check.in_flight_slack += cell.concurrency
        before = upstream_count(upstream_port)
        cpu_before = target.process.cpu_seconds() if target.process else 0.0
        stats = run_wrk(target.url, script, cell.concurrency, run.args.duration, core)
        cpu = target.process.cpu_seconds() - cpu_before if target.process else 0.0
        forwarded = upstream_count(upstream_port) - before
        if target.process and stats.requests:
            run.cpu_us[(target.name, cell)] = cpu * 1e6 / stats.requests
        check.wrk_completed += stats.requests
        check.in_flight_slack += cell.concurrency
        run.results[(target.name, cell)] = stats
        run.forwarded[(target.name, cell)] = forwarded
        flag = f"  ({stats.error_count} errors: {stats.errors})" if stats.error_count else ""
        print(
            f"  {target.label:15} {cell.label:18} {stats.rps:9.0f} req/s  p50 {stats.p50_ms:8.2f} ms  "
            f"p99 {stats.p99_ms:8.2f} ms{flag}",
            flush=True,
        )
        if stats.error_count > max(1, stats.requests // 100):
            raise LoadError(
                f"{target.label}: {stats.error_count} of {stats.requests} requests failed in {cell.label} "
                f"({stats.errors}); see the logs in {run.run_dir}"
            )
        if target.name != "direct" and forwarded < stats.requests - stats.error_count:
            raise LoadError(
                f"{target.label}: answered {stats.requests} requests in {cell.label} but forwarded only "
                f"{forwarded} to the upstream; it is not proxying every request"
            )
    return check


def exact_ledger_count(run: Run, procs: ProcessSet, ctx: Context, check: LedgerCheck) -> None:
    """A fresh tiergate, exactly N requests (half streamed) at concurrency 32, SIGTERM, then N rows."""
    target = start_tiergate(procs, ctx, name="tiergate-exact")
    bodies = [chat_request(stream=i % 2 == 1) for i in range(run.args.ledger_requests)]
    check.exact_sent = len(bodies)
    sent = send_exactly(target.url, target.headers, bodies, concurrency=32)
    check.exact_ok, check.exact_failures = sent.ok, sent.failed
    if sent.failed:
        print(
            f"run.py: {len(sent.failed)} ledger-check requests failed, first: {sent.failed[0]}",
            file=sys.stderr,
        )
    assert target.process is not None and target.ledger_db is not None
    code = procs.stop(target.process, timeout=60)
    if code is None:
        raise LoadError("tiergate did not exit within 60 s of SIGTERM during the ledger check; it was killed")
    check.rows_exact = ledger_rows(target.ledger_db)


def run_all(run: Run, targets: list[str]) -> None:
    args = run.args
    with ProcessSet(run.run_dir) as procs:
        upstream_port = free_port()
        upstream = procs.start(
            "upstream",
            [sys.executable, str(HERE / "upstream.py"), "--port", str(upstream_port)],
            args.load_core,
        )
        wait_http(f"http://127.0.0.1:{upstream_port}/v1/models", upstream, 30)
        ctx = Context(upstream_port, args.gateway_core, run.run_dir, args.start_timeout)
        for name in targets:
            print(f"{LABELS[name]}:", flush=True)
            target: Target | None = None
            try:
                target = direct(ctx) if name == "direct" else STARTERS[name](procs, ctx)
                run.versions[name] = target.version
                if target.start_s:
                    run.start_s[name] = target.start_s
                forwarded_before = upstream_count(upstream_port)
                check = measure(run, target, upstream_port, args.load_core)
                if name == "tiergate":
                    run.ledger = check
                    check_ledger(run, procs, ctx, target, check, forwarded_before)
            except Exception as exc:  # noqa: BLE001 - one target failing must not take the others down
                if name == "direct":
                    raise
                reason = _reason(exc)
                print(f"run.py: {LABELS[name]} skipped: {reason}", file=sys.stderr, flush=True)
                run.skipped[name] = reason.splitlines()[0]
                if name == "tiergate":
                    run.ledger = LedgerCheck(error=f"tiergate was not measured: {run.skipped[name]}")
                for cell in run.cells:
                    run.results.pop((name, cell), None)
            finally:
                if target is not None and target.process is not None:
                    procs.stop(target.process)


def check_ledger(
    run: Run, procs: ProcessSet, ctx: Context, target: Target, check: LedgerCheck, forwarded_before: int
) -> None:
    """Graceful stop, rows against requests; then the exact count. A failure here fails only this check."""
    assert target.process is not None and target.ledger_db is not None
    try:
        check.stop_exit_code = procs.stop(target.process, timeout=60)
        check.upstream_forwarded = upstream_count(ctx.upstream_port) - forwarded_before
        check.rows_after_load = ledger_rows(target.ledger_db)
        if run.args.ledger_requests > 0:
            exact_ledger_count(run, procs, ctx, check)
    except Exception as exc:  # noqa: BLE001 - reported in the targets table, the latency figures stand
        check.error = _reason(exc).splitlines()[0]
        print(f"run.py: the ledger check failed: {_reason(exc)}", file=sys.stderr, flush=True)


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, (StartError, LoadError)) else f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------- report


def _exit(code: int | None) -> str:
    if code is None:
        return "killed after 60 s: no graceful stop"
    if code in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
        return f"graceful stop, exit status {code}"
    return f"exit status {code}"


def _cpu(us_per_request: float | None) -> str:
    if not us_per_request:
        return "n/a"
    return f"{us_per_request:.0f} ({1e6 / us_per_request:.0f})"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(run: Run, targets: list[str]) -> str:
    head = (
        "| cell | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | gateway CPU µs/req (req per CPU-s) "
        "| tiergate req/s ÷ this | this added p50 ÷ tiergate's |"
    )
    rows = [head, "|" + "---|" * 10]
    for cell in run.cells:
        floor = run.results.get(("direct", cell))
        ours = run.results.get(("tiergate", cell))
        for name in targets:
            stats = run.results.get((name, cell))
            if stats is None:
                why = run.skipped.get(name, "not run").replace("|", "\\|")
                rows.append(f"| {cell.label} | {LABELS[name]} | not run: {why[:120]} | | | | | | | |")
                continue
            added50 = stats.p50_ms - floor.p50_ms if floor and name != "direct" else None
            added99 = stats.p99_ms - floor.p99_ms if floor and name != "direct" else None
            speed = ratio_added = None
            if ours and name not in ("direct", "tiergate"):
                speed = ours.rps / stats.rps if stats.rps else None
                ours_added = ours.p50_ms - floor.p50_ms if floor else None
                if added50 is not None and ours_added and ours_added > 0:
                    ratio_added = added50 / ours_added
            errors = f" ({stats.error_count} errors)" if stats.error_count else ""
            rows.append(
                f"| {cell.label} | {LABELS[name]} | {stats.rps:.0f}{errors} | {stats.p50_ms:.2f} | {stats.p99_ms:.2f} "
                f"| {'—' if name == 'direct' else _fmt(added50)} | {'—' if name == 'direct' else _fmt(added99)} "
                f"| {_cpu(run.cpu_us.get((name, cell))) if name != 'direct' else '—'} "
                f"| {_fmt(speed, 1) + '×' if speed else '—'} | {_fmt(ratio_added, 1) + '×' if ratio_added else '—'} |"
            )
    return "\n".join(rows)


def verdicts(run: Run) -> list[tuple[str, str, bool | None]]:
    """The issue's targets, each with the figure that decides it; None when it could not be measured."""
    out: list[tuple[str, str, bool | None]] = []
    low = min(c.concurrency for c in run.cells)
    high = max(c.concurrency for c in run.cells)
    for cell in [c for c in run.cells if c.concurrency == low]:
        floor, ours = run.results.get(("direct", cell)), run.results.get(("tiergate", cell))
        if floor and ours:
            added = ours.p50_ms - floor.p50_ms
            figure = f"{added:.2f} ms"
            cpu = run.cpu_us.get(("tiergate", cell))
            if cpu:
                figure += f" (tiergate's CPU time per request: {cpu / 1000:.2f} ms)"
            out.append((f"tiergate adds ≤ 1 ms at p50, {cell.label}", figure, added <= 1.0))
        else:
            out.append((f"tiergate adds ≤ 1 ms at p50, {cell.label}", "not measured", None))
    for name, factor in (("litellm", 10.0), ("portkey", 1.0)):
        for cell in [c for c in run.cells if c.concurrency == high]:
            ours, theirs = run.results.get(("tiergate", cell)), run.results.get((name, cell))
            goal = f"tiergate throughput ≥ {factor:g}× {LABELS[name]}'s, {cell.label}"
            if ours and theirs and theirs.rps:
                ratio = ours.rps / theirs.rps
                figure = f"{ratio:.1f}× ({ours.rps:.0f} vs {theirs.rps:.0f} req/s)"
                our_cpu, their_cpu = run.cpu_us.get(("tiergate", cell)), run.cpu_us.get((name, cell))
                if our_cpu and their_cpu:
                    figure += f"; per CPU-second {their_cpu / our_cpu:.1f}×"
                out.append((goal, figure, ratio >= factor))
            else:
                out.append((goal, "not measured", None))
    ledger = run.ledger
    if ledger is None:
        out.append(("no ledger record lost", "not measured (tiergate not in --targets)", None))
    elif ledger.error:
        out.append(("no ledger record lost", f"not measured: {ledger.error[:160]}", None))
    else:
        lost = max(0, max(ledger.wrk_completed, ledger.upstream_forwarded) - (ledger.rows_after_load or 0))
        figure = (
            f"under load: {ledger.wrk_completed} answered, {ledger.upstream_forwarded} forwarded upstream, "
            f"{ledger.rows_after_load} rows after SIGTERM ({_exit(ledger.stop_exit_code)}; up to "
            f"{ledger.in_flight_slack} more allowed for requests wrk cut off at a cell's end), {lost} lost"
        )
        if ledger.rows_exact is not None:
            figure += (
                f"; exact: {ledger.exact_sent} sent, {ledger.exact_ok} answered 200, {ledger.rows_exact} rows"
            )
            if ledger.exact_failures:
                figure += f" ({len(ledger.exact_failures)} failed, first: {ledger.exact_failures[0][:120]})"
        out.append(("no ledger record lost", figure, ledger.passed))
    return out


def _machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


PORTKEY_NOTE = [
    "Portkey's Node build waits 25 ms before it forwards the first chunk of every stream (a `setTimeout(..., 25)` "
    "in its SSE reader, `build/start-server.js`), so its streaming latency has a 25 ms floor by design.",
    "",
]


def _git_revision() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "no commit yet"


def report(run: Run, targets: list[str]) -> str:
    args = run.args
    marks = {True: "pass", False: "**miss**", None: "not measured"}
    lines = [
        "# Gateway overhead: tiergate vs. direct, LiteLLM proxy and Portkey",
        "",
        f"Produced by `{run.command}` on {run.started} UTC at tiergate revision `{_git_revision()}` "
        f"(run folder `{run.run_dir}`, with every process's log).",
        "",
        "## Set-up",
        "",
        f"- Machine: {_machine()}; load average {run.load_before} before, {run.load_after} after "
        "(the machine is shared, so absolute figures move between runs; the side-by-side ratios are the point).",
        f"- Each gateway alone on core {args.gateway_core} (`taskset -c {args.gateway_core}`), one process, one worker; "
        f"the fixed-answer upstream (`bench/overhead/upstream.py`), wrk and the harness on core {args.load_core}.",
        "- Versions: "
        + "; ".join(f"{LABELS[k]}: {v}" for k, v in run.versions.items())
        + f"; wrk: {' '.join(_tool_version(['wrk', '-v']).split()[:2])}; node: {_tool_version(['node', '--version'])}.",
        "- Start-up (s until ready): "
        + ", ".join(f"{LABELS[k]} {v:.1f}" for k, v in run.start_s.items())
        + ".",
        f"- Body: `bench/overhead/workload.py` (system prompt, 3 tools, 4 user turns, one tool call; "
        f"{len(json.dumps(chat_request(False)))} bytes); streaming asks for the usage chunk.",
        f"- Each cell: {args.warmup} s warm-up, then {args.duration} s of `wrk -t1 -cN` posting the body "
        '(Lua script); latency is send to last byte; "added" is the target\'s percentile minus the direct '
        "floor's in the same cell. At c=32 latency is mostly queueing, so read throughput there.",
        "- Gateway CPU µs/req: user + system CPU time of the gateway process (all threads) during the cell ÷ "
        "requests answered; in brackets its inverse, the requests one CPU-second serves. It moves much less than "
        "req/s when neighbours load the machine, so the targets table gives both ratios.",
        "- Configs: tiergate `bench/overhead/tiergate.yaml` (ledger on, SQLite); LiteLLM proxy with no database "
        "and no master key, `LITELLM_LOG=ERROR`; Portkey `--headless`, `NODE_ENV=production`, provider headers, "
        "`@hono/node-server` pinned to 1.14.1 by setup.sh (later versions break its streams: Portkey-AI/gateway#1389).",
        "",
        "## Results",
        "",
        table(run, targets),
        "",
        *(PORTKEY_NOTE if ("portkey", next(c for c in run.cells)) in run.results else []),
        "## Targets (issue 3)",
        "",
        "| target | figure | result |",
        "|---|---|---|",
    ]
    for goal, figure, ok in verdicts(run):
        lines.append(f"| {goal} | {figure} | {marks[ok]} |")
    if run.skipped:
        lines += ["", "## Not run", ""]
        lines += [f"- {LABELS[k]}: {v}" for k, v in run.skipped.items()]
    return "\n".join(lines) + "\n"


def dump_raw(run: Run) -> None:
    raw = {
        "command": run.command,
        "started": run.started,
        "results": [
            {
                "target": name,
                "concurrency": cell.concurrency,
                "stream": cell.stream,
                "forwarded": run.forwarded.get((name, cell)),
                **asdict(stats),
            }
            for (name, cell), stats in run.results.items()
        ],
        "skipped": run.skipped,
        "ledger": asdict(run.ledger) if run.ledger else None,
    }
    (run.run_dir / "results.json").write_text(json.dumps(raw, indent=2))


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    print("run.py: terminated; stopping every process it started", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)  # unwinds through ProcessSet.__exit__, which stops every child


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    cells = parse_cells(args)
    targets = parse_targets(args.targets)
    check_cores(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.sched_setaffinity(0, {args.load_core})  # the harness itself stays off the gateway's core
    command = "python bench/overhead/run.py" + (
        ""
        if argv is None and len(sys.argv) == 1
        else " " + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    run_dir = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    run = Run(args, command, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"), run_dir, cells)
    run.load_before = f"{os.getloadavg()[0]:.2f}"
    print(f"run.py: {len(targets)} targets x {len(cells)} cells, logs in {run_dir}", flush=True)
    started = time.monotonic()
    try:
        run_all(run, targets)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f"run.py: the floor could not be measured, nothing to compare: {_reason(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run.py: interrupted; every process it started has been stopped", file=sys.stderr)
        return 130
    run.load_after = f"{os.getloadavg()[0]:.2f}"
    text = report(run, targets)
    dump_raw(run)
    print()
    print(text)
    print(f"run.py: done in {time.monotonic() - started:.0f} s; raw figures in {run_dir / 'results.json'}")
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"run.py: wrote {args.out}")
    if run.ledger is not None and not run.ledger.passed and "tiergate" not in run.skipped:
        print("run.py: the ledger check did not pass; see the targets table", file=sys.stderr)
        return 1
    if run.skipped:
        print(
            "run.py: not every target ran: " + "; ".join(f"{LABELS[k]}: {v}" for k, v in run.skipped.items()),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
