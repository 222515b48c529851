"""The `tiergate` command.

tiergate serve --config configs/tiergate.yaml --port 8080
tiergate workflows
tiergate export acme --out acme.jsonl
tiergate flowchart mine acme --out acme.yaml      # the compiler's command, reading the store through `captured_lines`
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    name="tiergate",
    help="OpenAI-compatible gateway that routes, trims and compiles agent workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("tiergate")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="config YAML (default: $TIERGATE_CONFIG, configs/tiergate.yaml, embedded)"
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise: no traceback for a user's mistake."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"tiergate: {message}", markup=False)
    return typer.Exit(code)


def settings_or_exit(config: str | None) -> Settings:
    """Load and check the config, rung sections included; a mistake exits with one line, code 2."""
    from gateway.proxy.defaults import check_workflow_settings
    from gateway.proxy.policy import check_rungs

    try:
        settings = load_settings(config)
        check_rungs(settings)
        check_workflow_settings(settings)
        return settings
    except ConfigError as exc:
        raise fail(str(exc)) from None


def store_name(settings: Settings) -> str:
    """The store's URL without credentials, for messages."""
    return settings.storage.url.split("@")[-1]


def open_store(settings: Settings) -> Engine:
    """The config's store, migrated like `serve` leaves it; an unreachable one exits with one line, code 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.store.engine import make_engine, migrate

    engine = None
    try:
        engine = make_engine(settings.storage.url)
        migrate(engine)
    except (SQLAlchemyError, OSError) as exc:
        if engine is not None:
            engine.dispose()
        raise fail(
            f"cannot read the store {store_name(settings)}: {type(exc).__name__}; check storage.url in the config"
        ) from None
    return engine


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from config)")] = None,
) -> None:
    """Run the gateway."""
    import uvicorn

    from gateway.web.app import create_app

    settings = settings_or_exit(config)
    setup_logging(settings.server.log_level)
    bind = host or settings.server.host
    if settings.admin_key is None and bind not in LOOPBACK:
        log.warning(
            "no admin key set (TIERGATE_ADMIN_KEY): refusing to expose an open gateway on %s; binding to 127.0.0.1 only",
            bind,
        )
        bind = "127.0.0.1"
    elif settings.admin_key is None:
        log.warning("no admin key set (TIERGATE_ADMIN_KEY): open mode, bound to loopback %s only", bind)
    log.info(
        "config %s (%s), %d models, store %s",
        settings.source,
        settings.digest,
        len(settings.models),
        settings.storage.url.split("@")[-1],
    )
    uvicorn.run(
        create_app(settings),
        host=bind,
        port=port if port is not None else settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,  # the ledger is the access log; uvicorn's costs ~10% throughput
        timeout_graceful_shutdown=30,
        lifespan="on",
    )


@app.command()
def workflows(config: ConfigOpt = None) -> None:
    """Print per-workflow traffic, cost and savings from the ledger, and which rungs are active and why."""
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.store.queries import workflow_summaries

    settings = settings_or_exit(config)
    engine = open_store(settings)
    try:
        rows = workflow_summaries(engine)
    except SQLAlchemyError as exc:
        raise fail(
            f"cannot read the store {store_name(settings)}: {type(exc).__name__}; check storage.url in the config"
        ) from None
    table = Table(title=f"workflows ({store_name(settings)})")
    for col in (
        "workflow",
        "requests",
        "convs",
        "prompt tok",
        "compl tok",
        "cost $",
        "baseline $",
        "savings $",
        "p50 ms",
        "p95 ms",
        "last seen",
    ):
        table.add_column(col, justify="left" if col == "workflow" else "right")
    import time

    for r in rows:
        table.add_row(
            r["workflow"],
            str(r["requests"]),
            str(r["conversations"]),
            f"{r['prompt_tokens']:,}",
            f"{r['completion_tokens']:,}",
            f"{r['cost_usd']:.4f}",
            f"{r['baseline_cost_usd']:.4f}",
            f"{r['savings_usd']:.4f}",
            f"{r['p50_latency_ms'] or 0:.0f}",
            f"{r['p95_latency_ms'] or 0:.0f}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_seen"])),
        )
    Console(width=200).print(table)
    _print_rungs(engine, settings)


def _print_rungs(engine: Any, settings: Settings) -> None:
    """Per workflow, which rungs are active and why (gateway/loop/rungstatus.py), one line a rung."""
    from gateway.loop.rungstatus import RUNG_TITLES, rung_status

    out = Console(width=200, highlight=False, soft_wrap=True)
    out.print("\nrungs per workflow (on / waiting for traffic / off, and why)", markup=False)
    for wf in rung_status(engine, settings):
        out.print(f"  {wf['workflow']}" + ("" if wf["listed"] else " (found)"), markup=False)
        for key, title in RUNG_TITLES.items():
            r = wf["rungs"][key]
            out.print(f"    {title:<18} {r['state']}: {r['why']}", markup=False)


def _since(value: str | None) -> float | None:
    """`--since` as unix seconds: an ISO date or date-time (UTC unless it says otherwise)."""
    if value is None:
        return None
    import datetime as dt

    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--since `{value}` is not a date; write it as YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


@app.command()
def export(
    workflow: Annotated[str, typer.Argument(help="workflow name, as `tiergate workflows` lists it")],
    out: Annotated[str, typer.Option("--out", "-o", help="JSONL file to write (`-` for stdout)")],
    since: Annotated[str | None, typer.Option(help="only conversations started on or after this date")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many conversations")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a workflow's captured conversations as JSONL, one a line, in the OpenAI chat format.

    The file is what `tiergate compile --traffic` reads; it streams, so memory stays flat.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.store.transcripts import export_lines

    settings = settings_or_exit(config)
    start = _since(since)
    engine = open_store(settings)
    try:
        fh = sys.stdout.buffer if out == "-" else open(out, "wb")  # noqa: SIM115
    except OSError as exc:
        engine.dispose()
        raise fail(f"cannot write `{out}`: {exc.strerror or exc}") from None
    n = 0
    try:
        for line in export_lines(engine, workflow, since=start, limit=limit):
            fh.write(line)
            n += 1
    except SQLAlchemyError as exc:
        raise fail(f"reading the store failed after {n} conversations: {type(exc).__name__}") from None
    finally:
        if fh is not sys.stdout.buffer:
            fh.close()
        engine.dispose()
    if n == 0:
        raise fail(
            f"no captured conversations for workflow `{workflow}`"
            + (f" since {since}" if since else "")
            + "; list workflows with `tiergate workflows` (capture may be off for it)",
            code=1,
        )
    Console(stderr=True, highlight=False).print(f"wrote {n} conversations of `{workflow}` to {out}", markup=False)


def captured_lines(workflow: str, config: str | None) -> Iterator[bytes]:
    """A workflow's captured conversations as `tiergate export` lines: what `flowchart mine WORKFLOW` reads.

    The compiler's `mine` (compiler/mine/cli.py, `CapturedLines`) gets this reader as the Typer context
    object, so it reads the store without importing the gateway. It streams keyset pages like `export`;
    a name with no conversations (a mistyped file, most likely) or an unreachable store exits with one line.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.store.engine import normalise_url
    from gateway.store.transcripts import export_lines

    settings = settings_or_exit(config)
    missing = (
        f"no file `{workflow}` and no workflow `{workflow}` with captured conversations in {store_name(settings)}; "
        "run `tiergate workflows` to see names, or pass a JSONL export"
    )
    url = make_url(normalise_url(settings.storage.url))
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:") and not Path(database).expanduser().exists():
        raise fail(missing)  # opening it would leave an empty store behind a mistyped file name
    engine = open_store(settings)
    n = 0
    try:
        for line in export_lines(engine, workflow):
            n += 1
            yield line
    except SQLAlchemyError as exc:
        raise fail(f"reading the store {store_name(settings)} failed after {n} conversations: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    if n == 0:
        raise fail(missing)


def _register_optional(module: str) -> None:
    """Add the router's and the compiler's commands; they stay out of the gateway's import graph."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        if exc.name and exc.name.startswith(module.split(".")[0]):
            return
        raise
    mod.register(app)


def main() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    for module in ("gateway.loop.cli", "router.cli", "compiler.cli"):
        _register_optional(module)
    # the compiler's commands read the store through plain callables (key: compiler.mine.cli.CAPTURED_LINES)
    app(obj={"captured_lines": captured_lines})


if __name__ == "__main__":
    main()
