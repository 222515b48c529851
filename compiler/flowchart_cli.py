"""`tiergate flowchart check|convert|import-langgraph`: inspect, convert and import workflow charts.

`register_flowchart` adds the `flowchart` group to the `tiergate` app (through
`compiler.cli.register`); each subcommand is registered by its own small function on the
group, so a new one (`mine`, say) is one more `_add_...(sub)` call. Also runnable alone as
``python -m compiler.flowchart_cli flowchart check FILE``.

Example::

    tiergate flowchart check configs/workflows/travel-booking.yaml
    tiergate flowchart convert configs/workflows/password-reset.mmd --to yaml --out password-reset.yaml
    tiergate flowchart import-langgraph my_agent.graph:app --out my-agent.yaml
"""

from __future__ import annotations

from pathlib import Path

import typer

from compiler.flowchart import Flowchart, FlowchartError, validate
from compiler.formats import load_flowchart
from compiler.formats.yaml import dump_yaml
from compiler.mine.cli import register_mine
from compiler.paths import count_paths, enumerate_paths


def _fail(message: str, code: int = 2) -> typer.Exit:
    # One line on stderr, no traceback: the CLI contract for bad input.
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


def _load(file: Path) -> Flowchart:
    try:
        return load_flowchart(file)
    except FlowchartError as exc:
        raise _fail(str(exc)) from None


COUNT_LIMIT = 1_000_000  # counting is cheap (~5 µs a path); past this, print ">1000000"


def check_report(fc: Flowchart, max_loops: int = 1, budget: int = 1_000) -> tuple[list[str], int, int]:
    """The lines `check` prints, plus the counts of structure and synthesis issues."""
    issues = validate(fc)
    structure = [i for i in issues if i.kind == "structure"]
    synthesis = [i for i in issues if i.kind == "synthesis"]
    kinds: dict[str, int] = {}
    for n in fc.nodes.values():
        kinds[n.kind] = kinds.get(n.kind, 0) + 1
    lines = [
        f"flowchart `{fc.name}` ({fc.source or 'in memory'})",
        f"  hash:           {fc.digest()[:16]}",
        f"  nodes:          {len(fc.nodes)} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + ")",
        f"  edges:          {len(fc.edges)}",
        f"  start:          {fc.start}",
        f"  decision hubs:  {len(fc.decision_hubs)}"
        + (
            ": " + ", ".join(f"{d} ({len(fc.out_edges(d))} ways)" for d in fc.decision_hubs)
            if fc.decision_hubs
            else ""
        ),
        f"  terminals:      {len(fc.terminals)}"
        + (
            ": " + ", ".join(f"{t} ({fc.nodes[t].outcome or '?'})" for t in fc.terminals)
            if fc.terminals
            else ""
        ),
        f"  tools:          {', '.join(t['function']['name'] for t in fc.tools) or '-'}",
        f"  slots:          {', '.join(fc.slots) or '-'}",
    ]
    if not structure:
        counts = []
        for k in sorted({0, max_loops}):
            total = count_paths(fc, k, limit=COUNT_LIMIT)
            counts.append(
                f"{'>' + str(COUNT_LIMIT) if total > COUNT_LIMIT else total} with loops unrolled {k}x"
            )
        lines.append(f"  paths:          {'; '.join(counts)}")
        ps = enumerate_paths(fc, max_loops=max_loops, budget=budget)
        lines.append(
            f"  coverage:       nodes {ps.node_coverage:.0%}, edges {ps.edge_coverage:.0%} "
            f"({len(ps)} paths, {ps.method}, loops {max_loops}x)"
        )
    for note in fc.notes:
        lines.append(f"  NOTE    {note}")
    for issue in structure:
        lines.append(f"  ERROR   {issue}")
    for issue in synthesis:
        lines.append(f"  TODO    {issue}")
    if synthesis and not structure:
        lines.append("  (TODO items only stop offline rendering; fill them in the YAML before compiling)")
    return lines, len(structure), len(synthesis)


def register_flowchart(app: typer.Typer) -> None:
    """Add the `flowchart` group (check, convert, import-langgraph) to the `tiergate` app."""
    sub = typer.Typer(
        help="Inspect, convert and import workflow flowcharts (YAML, Mermaid, DOT, LangGraph).",
        no_args_is_help=True,
    )
    _add_check(sub)
    _add_convert(sub)
    _add_import_langgraph(sub)
    register_mine(sub)
    app.add_typer(sub, name="flowchart")


def _write(text: str, out: Path | None) -> None:
    """Print ``text``, or write it to ``out`` and say so on stderr."""
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(
            f"cannot write `{out}` ({exc.strerror or exc}); check the folder exists and is writable"
        ) from None
    typer.echo(f"wrote {out}", err=True)


def _add_check(sub: typer.Typer) -> None:
    @sub.command("check")
    def check_cmd(
        file: Path = typer.Argument(..., help="Flowchart: .yaml/.yml, .mmd/.mermaid or .dot/.gv."),
        max_loops: int = typer.Option(
            1, "--max-loops", min=0, help="Times each loop may be unrolled when counting paths."
        ),
        budget: int = typer.Option(
            1_000, "--budget", min=1, help="Paths kept for the coverage line; past it, a sample is drawn."
        ),
        strict: bool = typer.Option(
            False, "--strict", help="Also fail on TODO items (gaps that stop offline rendering)."
        ),
    ) -> None:
        """Validate a flowchart and print nodes, edges, decision hubs, terminals and path counts."""
        fc = _load(file)
        try:
            lines, n_structure, n_synthesis = check_report(fc, max_loops=max_loops, budget=budget)
        except FlowchartError as exc:
            raise _fail(str(exc)) from None
        typer.echo("\n".join(lines))
        if n_structure:
            raise _fail(
                f"`{file}` has {n_structure} structural problem(s) listed above; fix them and check again", 1
            )
        if strict and n_synthesis:
            raise _fail(
                f"`{file}` has {n_synthesis} TODO item(s) listed above; fill them in before compiling", 1
            )


def _add_convert(sub: typer.Typer) -> None:
    @sub.command("convert")
    def convert_cmd(
        file: Path = typer.Argument(..., help="Flowchart: .yaml/.yml, .mmd/.mermaid or .dot/.gv."),
        to: str = typer.Option("yaml", "--to", help="Output format (yaml)."),
        out: Path | None = typer.Option(None, "--out", help="Write here instead of stdout."),
    ) -> None:
        """Write a chart as YAML, the format to enrich with reply templates, utterances and slots."""
        if to.lower() not in ("yaml", "yml"):
            raise _fail(f"cannot convert to `{to}`; the only target is `yaml`")
        fc = _load(file)
        for note in fc.notes:
            typer.echo(f"note: {note}", err=True)
        _write(dump_yaml(fc), out)


def _add_import_langgraph(sub: typer.Typer) -> None:
    @sub.command("import-langgraph")
    def import_langgraph_cmd(
        target: str = typer.Argument(
            ..., help="The graph as `module:attribute` (a StateGraph, its compiled graph, or a function returning one)."
        ),
        name: str | None = typer.Option(None, "--name", help="Workflow name (default: the attribute)."),
        out: Path | None = typer.Option(None, "--out", help="Write the YAML here instead of stdout."),
    ) -> None:
        """Build a flowchart from a LangGraph graph: nodes, edges, conditional edges as decisions."""
        from compiler.formats.langgraph import load_langgraph

        try:
            fc = load_langgraph(target, name=name)
        except FlowchartError as exc:
            raise _fail(str(exc)) from None
        for note in fc.notes:
            typer.echo(f"note: {note}", err=True)
        _write(dump_yaml(fc), out)


def main() -> None:
    app = typer.Typer(add_completion=False)
    register_flowchart(app)
    app()


if __name__ == "__main__":
    main()
