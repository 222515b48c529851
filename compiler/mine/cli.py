"""`tiergate flowchart mine SOURCE`: a flowchart draft from a workflow's captured conversations.

    tiergate flowchart mine acme --out acme-mined.yaml           # the workflow's conversations in the store
    tiergate flowchart mine exports/travel.jsonl --out travel-mined.yaml
    tiergate flowchart mine exports/travel.jsonl --to mermaid --out travel-mined.mmd
    python -m compiler.mine.cli exports/travel.jsonl        # files only: no gateway, no store

SOURCE is a JSONL file in the OpenAI chat format (one ``{"messages", "tools"}`` a line), what
``tiergate export WORKFLOW`` writes, or, when no such file exists, a workflow's name: the
``tiergate`` app then streams that workflow's captured conversations from the gateway's store
(``--config``, as ``tiergate export`` resolves it) into the same reader. The compiler never imports the
gateway: the app hands the reader over as the Typer context object (:data:`CAPTURED_LINES`). The
report (fitness on held-out conversations, coverage, slots, the static/transient split) goes to
stderr; the chart to ``--out`` or stdout.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
import yaml

from compiler.flowchart import FlowchartError, to_dict, validate
from compiler.mine.draw import to_mermaid

if TYPE_CHECKING:  # the miner pulls in scikit-learn: imported when `mine` runs, not with every command
    from compiler.mine.fitness import FitnessReport
    from compiler.mine.miner import MinedWorkflow
    from compiler.mine.traces import Trace

CapturedLines = Callable[[str, str | None], Iterable[bytes]]
"""``(workflow, config) -> its captured conversations`` as `tiergate export` lines, oldest first.

The reader reports its own failures (an unknown workflow, a store it cannot reach) in one line and
raises ``typer.Exit``; it is plain data across the package border, so the compiler needs no gateway import.
"""
CAPTURED_LINES = "captured_lines"  # key of the reader in the Typer context object (``app(obj={...})``)


def _fail(message: str, code: int = 2) -> typer.Exit:
    # One line on stderr, no traceback: the CLI contract for bad input.
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


def dump_chart(mined: MinedWorkflow, to: str) -> str:
    """The chart as YAML (the format `flowchart check` and `compile` read) or as Mermaid."""
    if to == "mermaid":
        return to_mermaid(mined.flowchart)
    return yaml.safe_dump(to_dict(mined.flowchart), sort_keys=False, allow_unicode=True, width=100)


def report_lines(mined: MinedWorkflow, fit: FitnessReport | None, misfits: int = 5) -> list[str]:
    """What `mine` prints: the chart's shape, slots, the static split, fitness and coverage."""
    fc = mined.flowchart
    kinds = Counter(n.kind for n in fc.nodes.values())
    split = mined.split
    lines = [
        f"mined `{fc.name}` from {mined.conversations} conversations in {mined.seconds:.2f} s",
        f"  nodes:          {len(fc.nodes)} (" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")",
        f"  edges:          {len(fc.edges)}",
        f"  decision hubs:  {len(fc.decision_hubs)}",
        "  terminals:      " + (", ".join(f"{t} ({fc.nodes[t].outcome})" for t in fc.terminals) or "-"),
        f"  graph:          {mined.graph.prefix_states} prefix-tree states -> "
        f"{len(mined.graph.nodes)} steps ({mined.graph.splits} split)",
    ]
    if mined.outliers:
        lines.append(
            f"  set aside:      {len(mined.outliers)} conversation(s) taking rare transitions (--noise), e.g. "
            + ", ".join(mined.outliers[:3])
        )
    for s in mined.slots.slots:
        lines.append(
            f"  slot {s.name}: {s.source} -> {', '.join(s.used_in)} ({len(s.values)} values, e.g. "
            + ", ".join(s.values[:3]) + ")"
        )
    lines.append(
        f"  static:         {len(split.static_lines)} system line(s) the same on every request "
        f"(in the weights); tools {'the same on every request' if split.tools_static else 'vary'}"
    )
    lines.append(
        f"  transient:      {len(split.step_lines)} step line(s) naming the node; "
        f"{len(split.conversation_lines)} per-conversation line shape(s)"
        + (": " + "; ".join(f"`{g.shape} …`" for g in split.conversation_lines[:3]) if split.conversation_lines else "")
    )
    if fit is not None:
        lines.append(
            f"  replay fitness: {fit.share:.3f} ({fit.fitting}/{fit.conversations} held-out conversations fit); "
            f"coverage: nodes {fit.node_coverage:.0%}, edges {fit.edge_coverage:.0%}"
        )
        for cid, why in fit.misfits[:misfits]:
            lines.append(f"  does not fit:   {cid}: {why}")
        if len(fit.misfits) > misfits:
            lines.append(f"  ... and {len(fit.misfits) - misfits} more")
    lines.extend(f"  note:           {note}" for note in fc.notes)
    issues = validate(fc)
    structure = [i for i in issues if i.kind == "structure"]
    lines.extend(f"  ERROR   {i}" for i in structure)
    todo = len(issues) - len(structure)
    lines.append(f"  check:          {len(structure)} structural problem(s), {todo} TODO item(s)")
    return lines


def read_source(
    source: str, config: str | None, captured: CapturedLines | None
) -> tuple[list[Trace], str, str]:
    """``(traces, default chart name, what to call the source in messages)``: a file, else a workflow.

    Without a reader (``python -m compiler.mine.cli``) SOURCE is always a file.
    """
    from compiler.mine.traces import read_traces, traces_from_lines

    path = Path(source)
    if captured is None or path.is_file():
        return read_traces(path), path.stem, f"`{path}`"
    lines = captured(source, config)
    try:
        return traces_from_lines(lines, f"`{source}`", unit="conversation"), source, f"workflow `{source}`"
    finally:
        close = getattr(lines, "close", None)
        if close is not None:  # a generator holding the store's connection: release it now, not at GC
            close()


def _captured_lines(ctx: typer.Context) -> CapturedLines | None:
    obj = ctx.find_root().obj
    reader = obj.get(CAPTURED_LINES) if isinstance(obj, dict) else None
    return reader if callable(reader) else None


def register_mine(flowchart_app: typer.Typer) -> None:
    """Add `mine` to the `tiergate flowchart` sub-app."""

    @flowchart_app.command("mine")
    def mine_cmd(
        ctx: typer.Context,
        source: str = typer.Argument(
            ...,
            metavar="SOURCE",
            help="A JSONL export (one OpenAI chat object a line), or, when no such file exists, "
            "a workflow's name: its conversations captured in the gateway's store.",
        ),
        out: Path | None = typer.Option(None, "--out", help="Write the chart here instead of stdout."),
        holdout: float = typer.Option(
            0.2, "--holdout", min=0.0, max=0.9, help="Share of conversations held out to measure fitness."
        ),
        to: str = typer.Option("yaml", "--to", help="Output format: yaml or mermaid."),
        name: str | None = typer.Option(
            None, "--name", help="Workflow name in the chart (default: the file name, or the workflow's)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the held-out draw."),
        noise: float = typer.Option(
            0.0, "--noise", min=0.0, max=0.5,
            help="Set aside conversations taking a transition below this share of its step's departures.",
        ),
        min_support: int | None = typer.Option(
            None, "--min-support", min=1, help="Turns each side of a node split needs (default: 2% of conversations, >= 5)."
        ),
        config: str | None = typer.Option(
            None, "--config", "-c",
            help="Gateway config whose store holds the workflow SOURCE names "
            "(default: $TIERGATE_CONFIG, configs/tiergate.yaml, embedded).",
        ),
    ) -> None:
        """Mine a flowchart draft from captured conversations and report its fitness on held-out ones.

        SOURCE is a JSONL export or a workflow's name (`tiergate workflows` lists them).
        """
        from compiler.mine.fitness import fitness
        from compiler.mine.miner import fewest_to_hold_out, holdout_split, mine
        from compiler.mine.traces import MineError

        fmt = to.lower()
        if fmt not in ("yaml", "yml", "mermaid", "mmd"):
            raise _fail(f"cannot write `{to}`; use --to yaml or --to mermaid")
        try:
            traces, default_name, what = read_source(source, config, _captured_lines(ctx))
            train, held_out = holdout_split(traces, holdout, seed=seed)
            if holdout > 0 and not held_out:
                raise MineError(
                    f"{what} has {len(traces)} conversation(s) with an assistant turn; --holdout {holdout:g} "
                    f"needs at least {fewest_to_hold_out(holdout)} to hold one out and measure fitness: "
                    "capture more, or pass --holdout 0 to mine them all without fitness"
                )
            mined = mine(train, name=name or default_name, min_support=min_support, noise=noise)
            fit = fitness(mined, held_out) if held_out else None
            lines = report_lines(mined, fit)
        except (MineError, FlowchartError) as exc:
            raise _fail(str(exc)) from None
        typer.echo("\n".join(lines), err=True)
        text = dump_chart(mined, "mermaid" if fmt in ("mermaid", "mmd") else "yaml")
        if out is None:
            typer.echo(text, nl=False)
        else:
            try:
                out.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise _fail(f"cannot write `{out}` ({exc.strerror or exc}); check the folder exists") from None
            typer.echo(f"wrote {out}", err=True)
        if any(i.kind == "structure" for i in validate(mined.flowchart)):
            raise _fail("the mined chart has structural problems (listed above); please report the traffic", 1)


def main() -> None:
    app = typer.Typer(add_completion=False)
    flowchart = typer.Typer(no_args_is_help=True)
    register_mine(flowchart)
    app.add_typer(flowchart, name="flowchart")
    app(["flowchart", "mine", *sys.argv[1:]])


if __name__ == "__main__":
    main()
