"""Compile a workflow from its captured traffic, with no hand-written flowchart.

    tiergate compile --from-traffic exports/acme.jsonl --out build/acme --base-model scratch:tiny

Stages (each writes its files in the output folder, the same ones the flowchart compile writes, so
the gateway's job runner follows both alike):

1. **mine** (``mined/``): hold out a share of the conversations (by whole conversation), mine the
   rest into a flowchart draft (``mined/chart.yaml``, ``chart.mmd``) and measure its fitness and
   coverage on the held-out ones (``mined/report.json``);
2. **data** (``data/``): the mined conversations themselves in the shape the compiled model is
   served (see :func:`served_messages`), each with ``data.value_variants`` copies whose slot values are
   swapped (compiler/variants.py: copy lessons, not memorised values), plus offline-rendered conversations
   of the mined paths the traffic walks thinly (fewer than ``data.thin_conversations``), built from real
   utterances and replies;
3. **train** (``run/``): the pipeline's trainer;
4. **gate** (``eval/``): the simulator on the mined graph (the flowchart compile's gate) and the
   replay gate on the held-out captured conversations (``compiler.mine.replay``), both must pass;
5. **artifact** (``artifact/``): the model, its manifest, and ``prompt.json``: the persona, the
   static lines (in the weights, stripped when serving) and, for reference, the step lines.

The served shape, in training, in the replay gate and in the gateway alike: the persona first, then the
messages as the app sent them, each system message reduced to its transient lines (an orchestrator's
"current step", a date, a user's name) where it stands; a system message with nothing transient goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import CompileConfig
from .mine.miner import MinedWorkflow, holdout_split, mine
from .mine.traces import Trace, message_text, read_traces
from .pipeline import EVAL_VARIANT_BASE, HELDOUT_VARIANT_BASE, CompileResult, _spread, _write_jsonl
from .train import write_json_atomic

Message = dict[str, Any]
PROMPT_FILE = "prompt.json"


def served_messages(messages: Sequence[Mapping[str, Any]], persona: str, static: frozenset[str] | set[str]) -> list[Message]:
    """The prompt a compiled model is served: the persona first, then the messages as the app sent them,
    each system message reduced to its transient lines (one left with none is dropped).

    The gateway does the same with ``artifact/prompt.json`` (gateway.proxy.plan.served_messages).
    """
    out: list[Message] = [{"role": "system", "content": persona}]
    for m in messages:
        if m.get("role") in ("system", "developer"):
            kept = [ln.strip() for ln in message_text(m).splitlines() if ln.strip() and ln.strip() not in static]
            if kept:
                out.append({"role": "system", "content": "\n".join(kept)})
        else:
            out.append(dict(m))
    return out


def _sets(mined: MinedWorkflow) -> tuple[str, frozenset[str]]:
    return mined.flowchart.system_prompt, frozenset(mined.split.static_lines)


def training_row(trace: Trace, mined: MinedWorkflow) -> dict[str, Any]:
    """A captured conversation as training data, in the shape it is served."""
    persona, static = _sets(mined)
    return {"messages": served_messages(trace.messages, persona, static),
            "tools": [dict(t) for t in mined.flowchart.tools],
            "tiergate": {"workflow": mined.flowchart.name, "source": "traffic", "conversation": trace.id}}


def captured_rows(traces: Sequence[Trace], mined: MinedWorkflow, variants: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """The captured conversations as training rows, each followed by ``variants`` value-swapped copies
    (compiler/variants.py); returns the rows and how many of them are variants."""
    from .variants import value_variants

    pools = {s.name: list(s.values) for s in mined.slots.slots}
    rows: list[dict[str, Any]] = []
    swapped = 0
    for trace in traces:
        row = training_row(trace, mined)
        more = value_variants(row, mined.bind(trace), pools, variants, f"{seed}|{trace.id}")
        rows += [row, *more]
        swapped += len(more)
    return rows, swapped


def _with_steps(row: dict[str, Any], mined: MinedWorkflow) -> dict[str, Any]:
    """A rendered conversation with the app's step line before each turn whose node has one."""
    steps = mined.split.step_lines
    nodes = list(row["tiergate"].get("nodes") or [])
    out: list[Message] = []
    for m in row["messages"]:
        if m.get("role") == "assistant" and nodes:
            node = mined.flowchart.nodes.get(nodes.pop(0))
            if node is not None and node.text in steps:
                out.append({"role": "system", "content": node.text})
        out.append(m)
    return row | {"messages": out}


def serve_prepare(mined: MinedWorkflow) -> Callable[[Sequence[Mapping[str, Any]]], list[Message]]:
    """The replay gate's history shaping: what the gateway sends the compiled model at that turn."""
    persona, static = _sets(mined)
    return lambda msgs: served_messages(msgs, persona, static)


def render_path(fc: Any, path: Any, seed: int, variant: int, novel_share: float = 0.0) -> dict[str, Any] | None:
    """One offline-rendered conversation of a mined path, or None where the draft cannot render it (an
    edge without utterances, a TODO `flowchart check` lists): the captured conversations still train it."""
    from .flowchart import FlowchartError
    from .render import render_offline

    try:
        return render_offline(fc, path, seed=seed, variant=variant, novel_share=novel_share)
    except (FlowchartError, ValueError, KeyError, IndexError):
        return None


def _thin_rows(mined: MinedWorkflow, cfg: CompileConfig) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """Rendered conversations for the mined paths fewer than ``data.thin_conversations`` captured
    conversations walk (walked at least once, unless ``data.render_unwalked``), and the paths the simulator
    gate drives: every mined path, or with ``data.render_unwalked`` off only those traffic walks (the model
    is not taught the others, which for such an app mix branches it never mixes)."""
    from .paths import enumerate_paths

    d = cfg.data
    thin = d.thin_conversations
    ps = enumerate_paths(mined.flowchart, max_loops=d.max_loops, budget=d.path_budget, seed=d.seed)
    walked: dict[tuple[str, ...], int] = {}
    for nodes in mined.turn_nodes:
        walked[tuple(nodes)] = walked.get(tuple(nodes), 0) + 1
    rows: list[dict[str, Any]] = []
    thin_paths = 0
    gated: list[Any] = []
    for p in ps.paths:
        probe = render_path(mined.flowchart, p, d.seed, 0)
        if probe is None:
            continue
        seen = walked.get(tuple(probe["tiergate"]["nodes"]), 0)
        if seen or d.render_unwalked:
            gated.append(p)
        if seen < thin and (seen > 0 or d.render_unwalked):
            thin_paths += 1
            more = [render_path(mined.flowchart, p, d.seed, v, d.novel_slot_share) for v in range(thin - seen)]
            rows += [_with_steps(r, mined) for r in more if r is not None]
    # traffic first: rendered conversations never outnumber the captured ones
    captured = len(mined.turn_nodes)
    rows = _spread(rows, max(0, min(captured, d.max_train_conversations - captured)))
    return rows, gated, {"total": len(ps.paths), "thin": thin_paths, "method": ps.method, "gated": len(gated),
                         "node_coverage": ps.node_coverage, "edge_coverage": ps.edge_coverage}


def mine_stage(traffic: str | Path, out: Path, holdout: float, seed: int, name: str | None,
               echo: Callable[[str], None]) -> tuple[MinedWorkflow, list[Trace], list[Trace], dict[str, Any]]:
    import yaml

    from .flowchart import check, to_dict
    from .mine.draw import to_mermaid
    from .mine.fitness import fitness

    traces = read_traces(traffic)
    if len(traces) < 10:
        raise ValueError(f"`{traffic}` holds {len(traces)} conversations; mining and the replay gate need at least 10")
    t = time.perf_counter()
    mined_set, held = holdout_split(traces, holdout, seed)
    wf_name = name or _workflow_name(traffic, traces)
    mined = mine(mined_set, name=wf_name)
    fit = fitness(mined, held)
    check(mined.flowchart, synthesis=False)  # structure; a TODO only keeps its paths from being rendered
    seconds = round(time.perf_counter() - t, 2)
    folder = out / "mined"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chart.yaml").write_text(yaml.safe_dump(to_dict(mined.flowchart), sort_keys=False,
                                                      allow_unicode=True, width=100))
    (folder / "chart.mmd").write_text(to_mermaid(mined.flowchart))
    kinds: dict[str, int] = {}
    for n in mined.flowchart.nodes.values():
        kinds[n.kind] = kinds.get(n.kind, 0) + 1
    report = {
        "workflow": wf_name, "conversations": len(traces), "mined": len(mined_set), "held_out": len(held),
        "mining_s": seconds, "nodes": len(mined.flowchart.nodes), "kinds": kinds,
        "edges": len(mined.flowchart.edges),
        "fitness": round(fit.share, 4), "fitting": fit.fitting, "node_coverage": round(fit.node_coverage, 4),
        "edge_coverage": round(fit.edge_coverage, 4), "misfits": [list(m) for m in fit.misfits[:20]],
        "static_lines": len(mined.split.static_lines), "step_lines": len(mined.split.step_lines),
    }
    write_json_atomic(folder / "report.json", report)
    echo(f"mined `{wf_name}` from {len(mined_set)} conversations in {seconds} s: {report['nodes']} nodes, "
         f"{report['edges']} edges; fitness {fit.share:.3f} on {len(held)} held out, "
         f"coverage nodes {fit.node_coverage:.0%} / edges {fit.edge_coverage:.0%}")
    return mined, mined_set, held, report


def _workflow_name(traffic: str | Path, traces: Sequence[Trace]) -> str:
    tag = traces[0].extra.get("tiergate") if traces else None
    if isinstance(tag, dict) and tag.get("workflow"):
        return str(tag["workflow"])
    return Path(traffic).stem


def compile_from_traffic(
    traffic: str | Path, out_dir: str | Path, cfg: CompileConfig | None = None, *,
    seed: int = 0, name: str | None = None, echo: Callable[[str], None] = print,
) -> CompileResult:
    """Mine, build the data, train, gate (simulator + replay) and write the artifact when both pass.

    The held-out share and the replay thresholds are the config's (``gate.replay_holdout``,
    ``gate.min_replay_accuracy``, ``gate.min_replay_node_accuracy``)."""
    from .artifact import Manifest, tool_call_parser, write_artifact, write_gate_failure
    from .base_model import check_base_model, check_base_template
    from .evaluate import evaluate, report_markdown, write_report
    from .mine.replay import replay_gate, replay_markdown, replay_passes
    from .simulate import ModelPolicy
    from .train import read_jsonl
    from .train import train as run_train

    cfg = cfg or CompileConfig()
    holdout = cfg.gate.replay_holdout
    min_replay, min_replay_node = cfg.gate.min_replay_accuracy, cfg.gate.min_replay_node_accuracy
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"`gate.replay_holdout` is {holdout}; it must be above 0 and below 1 (the replay gate "
                         "needs held-out conversations)")
    check_base_model(cfg.train.base_model, lora=cfg.train.lora)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    began = time.monotonic()
    mined, mined_set, held, mined_report = mine_stage(traffic, out, holdout, seed, name, echo)
    fc = mined.flowchart
    check_base_template(cfg.train.base_model, calls_tools=bool(fc.tools))
    stages["mine"] = round(time.monotonic() - began, 2)

    t = time.monotonic()
    d = cfg.data
    captured, swapped = captured_rows(mined_set, mined, d.value_variants, d.seed)
    rendered, paths, path_info = _thin_rows(mined, cfg)
    train_rows = captured + rendered
    # the simulator drives the model the way the app will: the app's step line before each agent turn
    eval_rows = _spread([_with_steps(r, mined) for p in paths
                         if (r := render_path(fc, p, d.seed, EVAL_VARIANT_BASE)) is not None],
                        d.max_eval_conversations)
    loss_rows = [training_row(tr, mined) for tr in held[: max(1, len(held) // 2)]]
    loss_rows += [_with_steps(r, mined) for p in _spread(paths, 10)
                  if (r := render_path(fc, p, d.seed, HELDOUT_VARIANT_BASE)) is not None]
    data_dir = out / "data"
    _write_jsonl(data_dir / "train.jsonl", train_rows)
    _write_jsonl(data_dir / "eval.jsonl", eval_rows)
    _write_jsonl(data_dir / "heldout.jsonl", loss_rows)
    coverage: dict[str, Any] = {"node_coverage": mined_report["node_coverage"],
                                "edge_coverage": mined_report["edge_coverage"], "fitness": mined_report["fitness"]}
    meta: dict[str, Any] = {
        "workflow": fc.name, "flowchart_hash": fc.digest(), "source": "traffic",
        "paths": path_info,
        "coverage": coverage,
        "conversations": {"captured": len(mined_set) + len(held), "train_captured": len(mined_set),
                          "train_value_variants": swapped,
                          "train_rendered": len(rendered), "train": len(train_rows), "eval": len(eval_rows),
                          "replay": len(held), "heldout_loss": len(loss_rows)},
        "mode": "traffic",
    }
    write_json_atomic(data_dir / "meta.json", meta)
    echo(f"data: {len(mined_set)} captured (+ {swapped} value-swapped copies) + {len(rendered)} rendered ({path_info['thin']} thin paths of "
         f"{path_info['total']}) conversations; {len(held)} held out for the replay gate")
    stages["data"] = round(time.monotonic() - t, 2)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t = time.monotonic()
    result = run_train(train_rows, read_jsonl(data_dir / "heldout.jsonl"), out / "run", cfg.train, echo=echo)
    stages["train"] = round(time.monotonic() - t, 2)

    t = time.monotonic()
    policy = ModelPolicy.from_folder(result.model_dir, cfg.gate.max_new_tokens)
    tok = policy.tokenizer
    report = evaluate(fc, eval_rows, policy, cfg.gate, echo=echo)
    tools = [dict(x) for x in fc.tools]
    replay = replay_gate(lambda msgs, _tools: policy(msgs, tools), held, mined, prepare=serve_prepare(mined))
    ok, why = replay_passes(replay, min_accuracy=min_replay, min_node_accuracy=min_replay_node)
    report.thresholds = report.thresholds | {"min_replay_accuracy": min_replay, "min_replay_node_accuracy": min_replay_node}
    if not ok:
        report.passed = False
        report.reasons = [*report.reasons, *(f"replay: {r}" for r in why)]
    replay_fig = {"conversations": replay.conversations, "turns": replay.turns, "accuracy": round(replay.accuracy, 4),
                  "conversation_share": round(replay.conversation_share, 4), "passed": ok,
                  "per_node": {k: asdict(v) | {"accuracy": round(v.accuracy, 4)} for k, v in replay.per_node.items()}}
    report_path = write_report(report, out / "eval", {"model": result.model_dir, "traffic": str(traffic),
                                                      "replay": replay_fig})
    replay_md = replay_markdown(replay)
    (out / "eval" / "report.md").write_text(report_markdown(report) + "\n" + replay_md)
    stages["eval"] = round(time.monotonic() - t, 2)

    persona, static = _sets(mined)
    steps = frozenset(mined.split.step_lines)
    manifest = Manifest(
        workflow=fc.name, flowchart_hash=fc.digest(), base_model=cfg.train.base_model,
        data={"paths": path_info, "conversations": meta["conversations"], "source": "traffic"},
        coverage=coverage,
        eval=asdict(report.model) | {"passed": report.passed, "thresholds": report.thresholds, "replay": replay_fig},
        config_hash=cfg.config_hash(), system_prompt=persona, tools=tools,
        tool_call_parser=tool_call_parser(tok), end_of_turn=result.end_of_turn,
    )
    artifact: Path | None = None
    if report.passed:
        artifact = write_artifact(result.model_dir, out / "artifact", manifest, report)
        # the mined steps' replies: the gateway's canary judges a reply by its step, as the replay gate does
        replies = {n.id: list(n.say) for n in fc.nodes.values() if n.speaks and n.say}
        write_json_atomic(artifact / PROMPT_FILE, {"persona": persona, "static_lines": sorted(static),
                                                    "step_lines": sorted(steps), "replies": replies})
        (artifact / "mined-chart.yaml").write_text((out / "mined" / "chart.yaml").read_text())
        (out / "gate-report.md").unlink(missing_ok=True)
        echo(f"gate passed: artifact at {artifact}")
    else:
        path = write_gate_failure(out, manifest, report)
        with open(path, "a") as fh:
            fh.write("\n" + replay_md)
        echo(f"gate FAILED ({'; '.join(report.reasons)}); report at {path}")
    outcome = CompileResult(
        workflow=fc.name, out_dir=str(out), passed=report.passed, artifact=str(artifact) if artifact else None,
        report=str(report_path), reasons=report.reasons, metrics=asdict(report.model) | {"replay": replay_fig},
        data=meta | {"mined": mined_report}, train={k: v for k, v in asdict(result).items() if k != "losses"},
        stages=stages | {"wall": round(time.monotonic() - began, 2)}, config_hash=cfg.config_hash(),
    )
    write_json_atomic(out / "compile.json", asdict(outcome) | {"config": cfg.to_dict()})
    return outcome


def summary(result: CompileResult) -> str:
    """One line for the CLI: the two gates' figures and the stages' times."""
    m, r = result.metrics, result.metrics.get("replay", {})
    mined = result.data.get("mined", {})
    return (f"mined fitness {mined.get('fitness')}, replay accuracy {r.get('accuracy')} over {r.get('turns')} turns, "
            f"simulator node accuracy {m['node_accuracy']:.3f}, success {m['success_rate']:.3f}, "
            f"stages {result.stages}")



def main(argv: Sequence[str] | None = None) -> int:
    """``python -m compiler.traffic_compile mine FILE.jsonl --out DIR``: the mining stage alone (DIR/mined/).

    The gateway runs it when a proposal for a workflow without a flowchart opens, so the person approving
    sees the graph that will be compiled; the job then compiles from the same export.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m compiler.traffic_compile")
    parser.add_argument("stage", choices=["mine"])
    parser.add_argument("traffic")
    parser.add_argument("--out", required=True)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    try:
        mine_stage(args.traffic, Path(args.out), args.holdout, 0, args.name, print)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
