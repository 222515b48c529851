"""The shipped insurance-claims example (the paper's scale: 71 nodes, 26 hubs, 9 tools, 5 loops),
mined from rendered traffic with its flowchart withheld."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from compiler.flowchart import from_dict, validate
from compiler.mine.fitness import fitness, step_recovery
from compiler.mine.miner import holdout_split, mine
from compiler.mine.traces import traces_from_records
from compiler.paths import enumerate_paths
from compiler.render import render_offline

CHART = Path(__file__).resolve().parents[2] / "configs" / "workflows" / "insurance-claims.yaml"


def test_insurance_claims_is_recovered_from_its_traffic() -> None:
    fc = from_dict(yaml.safe_load(CHART.read_text(encoding="utf-8")))
    paths = enumerate_paths(fc, max_loops=1, budget=3000, seed=0).paths
    rng = random.Random(0)
    records, truth = [], []
    for i in range(600):
        conv = render_offline(fc, paths[rng.randrange(len(paths))], seed=0, variant=i)
        records.append({"messages": conv["messages"], "tools": conv["tools"]})
        truth.append(conv["tiergate"]["nodes"])
    traces = traces_from_records(records)
    by_id = {t.id: row for t, row in zip(traces, truth, strict=True)}
    train, held_out = holdout_split(traces, 0.2, seed=0)
    mined = mine(train, name="insurance-claims")
    rec = step_recovery(mined.turn_nodes, [by_id[t.id] for t in train])
    assert rec.true_steps >= 40  # of the chart's 44 agent steps, those the traffic shows
    assert rec.share >= 0.95 and rec.extra_share <= 0.05, rec.mapping
    # file_claim is called at four places with a different claim_type: four steps, not one.
    assert {n.id for n in mined.flowchart.nodes.values() if n.tool == "file_claim"} >= {
        "file_claim_motor", "file_claim_home", "file_claim_theft", "file_claim_medical"}
    # Outcomes read from the closing words: handed over, given up (a police report missing, nothing
    # filed), or done.
    outcomes = {rec.mapping[t]: mined.flowchart.nodes[t].outcome for t in mined.flowchart.terminals if t in rec.mapping}
    assert outcomes == {t: fc.nodes[t].outcome for t in outcomes}
    assert set(outcomes.values()) == {"success", "abandon", "escalate"}
    assert mined.flowchart.notes == ()  # `within_limit: true/false` tells the coverage branches apart
    assert fitness(mined, held_out).share >= 0.95
    assert [i for i in validate(mined.flowchart) if i.kind == "structure"] == []
