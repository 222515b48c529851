"""The shipped travel-booking example, mined from its own traffic with its flowchart withheld.

The "traffic" is rendered from ``configs/workflows/travel-booking.yaml`` (loops taken up
to once) and stripped of everything the renderer knows (the ``tiergate`` tag with the
node names): the miner sees only messages and tools, as in a capture. The true node of
every turn is kept aside to score the mined nodes.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import yaml

from compiler.flowchart import Flowchart, from_dict, validate
from compiler.mine.fitness import fitness, step_recovery
from compiler.mine.miner import holdout_split, mine
from compiler.mine.traces import traces_from_records
from compiler.paths import enumerate_paths
from compiler.render import render_offline

CHART = Path(__file__).resolve().parents[2] / "configs" / "workflows" / "travel-booking.yaml"


# Two more phrasings for every agent node: a frontier does not repeat itself word for word.
PARAPHRASES: dict[str, list[str]] = {
    "ask_trip": ["Hello and welcome to Skyway Travel! Where are you flying from and to, which date, how many passengers?",
                 "Welcome! Tell me where you are flying from and to, on which date, and how many passengers travel."],
    "offer_flight": ["Flight {flight} from {origin} to {city} on {date} costs {price} EUR per person. Book it for {passengers}?",
                     "I have flight {flight}, {origin} to {city} on {date}, {price} EUR per person. Shall I book it?"],
    "no_flights": ["I'm sorry, I found no flight from {origin} to {city} on {date}. Shall we search again?",
                   "Unfortunately there is no flight from {origin} to {city} on {date}. Search again with other details?"],
    "payment_failed": ["Sorry, the payment for flight {flight} was declined. Try again, or talk to a colleague?",
                       "The card payment for {flight} was declined. Should I try again or pass you to a colleague?"],
    "booked": ["Done! Flight {flight} is booked, your reference is {booking_ref}. Enjoy {city}!",
               "Your booking of flight {flight} is confirmed, reference {booking_ref}. Have a great trip!"],
    "goodbye": ["No problem, I have not booked anything. Thank you for contacting Skyway Travel, goodbye!",
                "Alright, nothing has been booked. Thanks for contacting Skyway Travel, goodbye!"],
    "handover": ["I am transferring you to a colleague, please stay in the chat, they will be with you shortly.",
                 "Let me transfer you to a colleague now. Please stay in the chat."],
}


def traffic(fc: Flowchart, n: int, seed: int = 0, budget: int | None = None) -> tuple[list[dict[str, Any]], list[list[str]]]:
    paths = enumerate_paths(fc, max_loops=1, budget=budget, seed=seed).paths
    rng = random.Random(seed)
    records, truth = [], []
    for i in range(n):
        conv = render_offline(fc, paths[rng.randrange(len(paths))], seed=seed, variant=i)
        records.append({"messages": conv["messages"], "tools": conv["tools"]})
        truth.append(conv["tiergate"]["nodes"])
    return records, truth


def mine_travel(fc: Flowchart, n: int = 300) -> tuple[Any, Any, Any]:
    records, truth = traffic(fc, n)
    traces = traces_from_records(records)
    by_id = {t.id: row for t, row in zip(traces, truth, strict=True)}
    train, held_out = holdout_split(traces, 0.2, seed=0)
    mined = mine(train, name="travel-booking")
    rec = step_recovery(mined.turn_nodes, [by_id[t.id] for t in train])
    return mined, rec, fitness(mined, held_out)


def test_travel_booking_is_recovered_from_its_traffic() -> None:
    fc = from_dict(yaml.safe_load(CHART.read_text(encoding="utf-8")))
    mined, rec, fit = mine_travel(fc)
    # 9 agent steps: 4 replies, 2 tool calls, 3 spoken terminals (start and the 5 decisions are silent).
    assert rec.true_steps == 9
    assert rec.share >= 0.9 and rec.extra_share <= 0.1, rec.mapping
    assert fit.share >= 0.95, fit.misfits[:5]
    mined_fc = mined.flowchart
    assert [i for i in validate(mined_fc) if i.kind == "structure"] == []
    assert len(mined_fc.decision_hubs) == len(fc.decision_hubs) == 5
    assert mined_fc.notes == ()  # every branch is told apart by the user's words or the tool's result
    assert sorted(mined_fc.nodes[t].outcome or "" for t in mined_fc.terminals) == ["abandon", "escalate", "success"]
    slots = {s.name: s.source for s in mined.slots.slots}
    assert {"origin": "user", "destination": "user", "date": "user", "passengers": "user",
            "flight": "tool:search_flights"}.items() <= slots.items()
    # The draft is compile-ready: every path renders offline.
    for path in enumerate_paths(mined_fc, max_loops=1).paths:
        render_offline(mined_fc, path, seed=0)


def paraphrased(fc: Flowchart) -> Flowchart:
    nodes = {nid: dataclasses.replace(n, say=(*n.say, *PARAPHRASES.get(nid, []))) for nid, n in fc.nodes.items()}
    return dataclasses.replace(fc, nodes=nodes)


def test_paraphrased_replies_are_still_one_step_each() -> None:
    """A frontier does not repeat itself word for word: every agent node has three phrasings."""
    fc = from_dict(yaml.safe_load(CHART.read_text(encoding="utf-8")))
    mined, rec, fit = mine_travel(paraphrased(fc), n=400)
    assert rec.share >= 0.9 and rec.extra_share <= 0.1, rec.mapping
    assert fit.share >= 0.95, fit.misfits[:5]
