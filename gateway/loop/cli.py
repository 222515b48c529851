"""`tiergate proposals`, `tiergate approve ID`, `tiergate reject ID`, `tiergate jobs`, `tiergate demo`.

    tiergate proposals                          # from the store named in the config (like `tiergate workflows`)
    tiergate approve 3 --by ana                 # queues the compile; the running gateway's loop starts it
    tiergate reject 4 --note "not this quarter"
    tiergate proposals --url http://gw:8080     # through a running gateway's API, with $TIERGATE_ADMIN_KEY

Two ways on purpose: on the gateway's host the store is at hand and no key is needed beyond file
access; from elsewhere, `--url` goes through the admin API and its key.
"""

from __future__ import annotations

import getpass
import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="config YAML (default: $TIERGATE_CONFIG, configs/tiergate.yaml, embedded)")
]
UrlOpt = Annotated[str | None, typer.Option("--url", help="a running gateway's URL: use its API instead of the store")]
KeyOpt = Annotated[str | None, typer.Option("--admin-key", help="admin key for --url (default: $TIERGATE_ADMIN_KEY)")]
ByOpt = Annotated[str | None, typer.Option("--by", help="who decides (default: cli:$USER)")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="why, recorded with the decision")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    from gateway.cli import fail

    return fail(message, code)


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _api(url: str, key: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    key = key or os.environ.get("TIERGATE_ADMIN_KEY") or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, headers=headers, json=body, timeout=30)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the gateway at `{url}` ({type(exc).__name__}); check --url", 1) from None
    if r.status_code >= 400:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        raise _fail(message, 2 if r.status_code in (400, 401, 403, 404) else 1)
    return r.json()


def _store(config: str | None) -> tuple[Any, Any, Any]:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.cli import settings_or_exit
    from gateway.loop.payback import LoopConfig, LoopConfigError
    from gateway.store.engine import make_engine, migrate

    settings = settings_or_exit(config)
    try:
        cfg = LoopConfig.from_dict(settings.loop)
    except LoopConfigError as exc:
        raise _fail(f"{settings.source}: {exc}") from None
    try:
        engine = make_engine(settings.storage.url)
        migrate(engine)
    except SQLAlchemyError as exc:
        raise _fail(f"cannot open the store {settings.storage.url.split('@')[-1]}: {type(exc).__name__}; "
                    "check storage.url in the config", 1) from None
    return settings, cfg, engine


def _local(config: str | None, fn: Any) -> Any:
    from gateway.errors import Conflict, GatewayError

    settings, cfg, engine = _store(config)
    try:
        return fn(settings, cfg, engine)
    except GatewayError as exc:
        raise _fail(exc.message, 1 if isinstance(exc, Conflict) else 2) from None
    finally:
        engine.dispose()


def _money(v: Any) -> str:
    return "-" if v is None else f"${float(v):,.4f}"


def _print_proposals(rows: list[dict[str, Any]]) -> None:
    import time

    table = Table(title="compile proposals")
    for col in ("id", "workflow", "kind", "status", "convs", "$/conv now", "$/conv compiled", "payback convs",
                "days", "raised", "decided by"):
        table.add_column(col, justify="left" if col in ("workflow", "kind", "status", "decided by") else "right")
    for p in rows:
        n = p.get("numbers") or {}
        days = n.get("days_to_payback")
        table.add_row(
            str(p["id"]), p["workflow"], p["kind"], p["status"], str(n.get("conversations", "-")),
            _money(n.get("cost_per_conversation")), _money(n.get("compiled_cost_per_conversation")),
            str(n.get("payback_conversations", "-")), "-" if days is None else f"{days:.1f}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(p["created"])),
            f"{p['decided_by']} {time.strftime('%m-%d %H:%M', time.localtime(p['decided_at']))}"
            if p.get("decided_by") else "",
        )
    Console(width=200).print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def proposals(
        config: ConfigOpt = None,
        status: Annotated[str | None, typer.Option(help="open, approved or rejected")] = None,
        url: UrlOpt = None,
        admin_key: KeyOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List compile proposals with the payback numbers behind them."""
        if status not in (None, "open", "approved", "rejected"):
            raise _fail(f"--status `{status}` is unknown; use open, approved or rejected")
        if url:
            rows = _api(url, admin_key, "GET", "/api/proposals" + (f"?status={status}" if status else ""))["data"]
        else:
            from gateway.loop.proposals import list_proposals

            rows = _local(config, lambda s, c, e: list_proposals(e, status))
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=str))
        else:
            _print_proposals(rows)

    @app.command(name="approve")
    def approve_cmd(
        proposal_id: Annotated[int, typer.Argument(metavar="ID", help="proposal id (tiergate proposals)")],
        config: ConfigOpt = None,
        by: ByOpt = None,
        note: NoteOpt = None,
        url: UrlOpt = None,
        admin_key: KeyOpt = None,
    ) -> None:
        """Approve a proposal: its compile job is queued and the gateway's loop starts it."""
        who = _who(by)
        body = {"by": who, "note": note}
        if url:
            out = _api(url, admin_key, "POST", f"/api/proposals/{proposal_id}/approve", body)
            prop, job = out["proposal"], out["job"]
        else:
            from gateway.loop.proposals import approve

            prop, job = _local(config, lambda s, c, e: approve(e, proposal_id, by=who, note=note, settings=s, cfg=c))
        typer.echo(f"proposal {prop['id']} ({prop['workflow']}) approved by {prop['decided_by']}; "
                   f"compile job {job['id']} queued, output in {job['out_dir']}")

    @app.command(name="reject")
    def reject_cmd(
        proposal_id: Annotated[int, typer.Argument(metavar="ID", help="proposal id (tiergate proposals)")],
        config: ConfigOpt = None,
        by: ByOpt = None,
        note: NoteOpt = None,
        url: UrlOpt = None,
        admin_key: KeyOpt = None,
    ) -> None:
        """Reject a proposal; it is not raised again until the workflow's prompt changes."""
        who = _who(by)
        body = {"by": who, "note": note}
        if url:
            prop = _api(url, admin_key, "POST", f"/api/proposals/{proposal_id}/reject", body)["proposal"]
        else:
            from gateway.loop.proposals import reject

            prop = _local(config, lambda s, c, e: reject(e, proposal_id, by=who, note=note))
        typer.echo(f"proposal {prop['id']} ({prop['workflow']}) rejected by {prop['decided_by']}")

    @app.command()
    def jobs(
        config: ConfigOpt = None, url: UrlOpt = None, admin_key: KeyOpt = None, as_json: JsonOpt = False,
    ) -> None:
        """List compile jobs and their progress."""
        if url:
            rows = _api(url, admin_key, "GET", "/api/jobs")["data"]
        else:
            from gateway.loop.jobs import list_jobs

            rows = _local(config, lambda s, c, e: list_jobs(e))
        if as_json:
            typer.echo(json.dumps(rows, indent=2, default=str))
            return
        table = Table(title="compile jobs")
        for col in ("id", "workflow", "state", "progress", "attempts", "error"):
            table.add_column(col)
        for j in rows:
            table.add_row(str(j["id"]), j["workflow"], j["state"], f"{j['progress'] * 100:.0f}%", str(j["attempts"]),
                          j.get("error") or "")
        Console(width=200).print(table)

    @app.command()
    def demo(
        yes: Annotated[bool, typer.Option("--yes", help="approve the proposal without waiting for a person")] = False,
        exit_: Annotated[bool, typer.Option("--exit", help="stop when the demo ends instead of serving the dashboard")] = False,
        conversations: Annotated[int, typer.Option("--conversations", min=10, max=100_000,
                                                   help="conversations replayed first (more follow until the "
                                                        "payback point)")] = 120,
        port: Annotated[int, typer.Option(help="gateway port (0 = any free one)")] = 8080,
        workdir: Annotated[str | None, typer.Option(help="folder for the demo's store, config and jobs")] = None,
        compile_steps: Annotated[int | None, typer.Option(
            help="training steps for the scratch model (default: the compiler's token budget, stopping early)")] = None,
        seed: Annotated[int | None, typer.Option(
            help="the compile's seed (slot values, split, initial weights); default: configs/compile.yaml's")] = None,
        compile_set: Annotated[list[str] | None, typer.Option(
            "--compile-set", help="passed to `tiergate compile --set`, e.g. data.variants_per_path=10")] = None,
        compile_cost: Annotated[float, typer.Option(
            help="compile cost the payback uses (a scratch model on this CPU; production default $65)")] = 1.0,
        compile_command: Annotated[str | None, typer.Option(
            help="fast path: a stand-in for `tiergate compile` (same arguments follow it), e.g. "
                 "`python tests/loop/fake_compile.py`; the loop runs as with the real compiler")] = None,
        serve_command: Annotated[str | None, typer.Option(
            help="fast path: a stand-in for `tiergate serve-model`; {artifact}, {port}, {script} are filled in, "
                 "e.g. `python -m gateway.demo.simulated --port {port} --name travel-booking-compiled "
                 "--script {script}`")] = None,
    ) -> None:
        """Offline demo: simulated providers, travel-booking traffic, proposal, compile, canary, switch.

        It waits for you to approve the proposal at the dashboard unless `--yes`. The real compile takes
        minutes on a CPU; `--compile-command` and `--serve-command` swap in stand-ins (the fast path) to see
        the whole loop in under a minute.
        """
        import shlex

        from gateway.demo.run import run_demo
        from gateway.demo.scene import DemoError

        try:
            run_demo(yes=yes, exit_after=exit_, conversations=conversations, port=port, workdir=workdir,
                     compile_steps=compile_steps,
                     compile_sets=tuple(compile_set or ()) + (() if seed is None else
                                                              (f"data.seed={seed}", f"train.seed={seed}")),
                     compile_command=tuple(shlex.split(compile_command or "")),
                     serve_command=tuple(shlex.split(serve_command or "")), compile_cost=compile_cost)
        except DemoError as exc:
            raise _fail(str(exc), exc.code) from None
