"""Which flowchart node a free-text agent turn performs, judged by what it says rather than its wording.

Offline conversations copy a node's ``say`` template, so ``render.match_node`` (word-sequence
similarity to the template) recognises them. A teacher model paraphrases: "Could you tell me where
you're departing from?" performs ``ask_trip`` yet shares little word order with its template. Both
teacher validation and the eval gate need the node of such a turn, so both use this module::

    node_of_reply(fc, None, "Sorry, nothing flies from Oslo to Rome that day. Try other dates?", slots)
    # -> "no_flights"

The judgement is TF-IDF cosine over the words each node is described by (its ``say`` templates and
its instruction ``text``), with slot values and ``{placeholders}`` both reduced to one token per slot
name, so a turn that mentions the flight number and the price leans to the node whose template does.
Words every node shares ("you", "flight") weigh little; words only one node uses weigh most.
An exact template match still wins first, so offline conversations are judged as before.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from compiler.flowchart import Flowchart

#: Cosine below which a turn is judged to be no node at all (off the chart).
MIN_SCORE = 0.12
#: Distinct terms (words or slot values) a turn must share with a node to be judged that node.
MIN_SHARED = 2

_WORD = re.compile(r"<slot:[a-z0-9_]+>|[a-z0-9]+")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Function words carry no evidence of a step; a short list keeps this dependency-free.
_STOP = frozenset(
    "a an the and or but if so to of in on at for from by with as is are was were be been being am do does did "
    "i me my we our you your he she it its they them their this that these those there here what which who whom "
    "will would shall should can could may might must have has had not no yes please just now then than too very "
    "also into about up out over again let us like how ll ve re s t d m o".split()
)


def _stem(word: str) -> str:
    """Crude suffix stripping, enough that "booked", "booking" and "books" meet at "book"."""
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _terms(text: str) -> list[str]:
    return [w if w.startswith("<slot:") else _stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


def _value_pattern(values: Mapping[str, str]) -> re.Pattern[str]:
    """One alternation of every slot value, longest first, whole words only (a count of "1" must not eat
    the 1 of "SK101"); one pass over the text instead of one per value."""
    alts = "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alts})(?![a-z0-9])" if alts else r"(?!x)x")


def _mark_values(text: str, values: Mapping[str, str], pattern: re.Pattern[str] | None = None) -> str:
    """Replace slot values with ``<slot:name>`` tokens."""
    rx = pattern or _value_pattern(values)
    return rx.sub(lambda m: f" <slot:{values[m.group(0)].lower()}> ", text.lower())


class NodeJudge:
    """The TF-IDF index of one chart's speaking nodes; build once, query from many threads (read-only).

    judge = NodeJudge(fc); judge.best("Your booking is confirmed, ref BK4Q7Z.", slots)
    """

    def __init__(self, fc: Flowchart, candidates: Iterable[str] | None = None) -> None:
        self.fc = fc
        ids = list(candidates) if candidates is not None else list(fc.nodes)
        self.nodes = [n for n in ids if n in fc.nodes and (fc.nodes[n].speaks or fc.nodes[n].kind == "agent")]
        docs: dict[str, Counter[str]] = {}
        for nid in self.nodes:
            node = fc.nodes[nid]
            bag: Counter[str] = Counter()
            # The templates say what is spoken; the instruction says what is done. Both describe the step.
            for text in (*node.say, node.text):
                bag.update(_terms(_PLACEHOLDER.sub(lambda m: f" <slot:{m.group(1).lower()}> ", text)))
            docs[nid] = bag
        df: Counter[str] = Counter(t for bag in docs.values() for t in set(bag))
        n = len(docs) or 1
        self.idf = {t: math.log(1 + n / c) for t, c in df.items()}
        self.vectors: dict[str, dict[str, float]] = {}
        for nid, bag in docs.items():
            vec = {t: (1 + math.log(c)) * self.idf[t] for t, c in bag.items()}
            norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
            self.vectors[nid] = {t: v / norm for t, v in vec.items()}
        # Without a conversation's own slots, any listed value stands for its slot.
        self.listed = {str(v).lower(): name for name, vals in fc.slots.items() for v in vals if str(v).strip()}
        self._listed_rx = _value_pattern(self.listed)

    def _bag(self, text: str, slots: Mapping[str, Any] | None) -> Counter[str]:
        own = {str(v).lower(): k for k, v in (slots or {}).items() if str(v).strip()}
        if all(self.listed.get(v) == k for v, k in own.items()):  # the usual case: listed values only
            return Counter(t for t in _terms(_mark_values(text, self.listed, self._listed_rx)) if t in self.idf)
        return Counter(t for t in _terms(_mark_values(text, {**self.listed, **own})) if t in self.idf)

    def scores(self, text: str, slots: Mapping[str, Any] | None = None) -> dict[str, float]:
        """Cosine of ``text`` with every candidate node, highest first; 0 where they share fewer than
        ``MIN_SHARED`` terms, since one shared word ("how", "help") is no evidence of a step."""
        bag = self._bag(text, slots)
        vec = {t: (1 + math.log(c)) * self.idf[t] for t, c in bag.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        out = {
            nid: sum(w * node_vec.get(t, 0.0) for t, w in vec.items()) / norm
            if sum(1 for t in vec if t in node_vec) >= MIN_SHARED else 0.0
            for nid, node_vec in self.vectors.items()
        }
        return dict(sorted(out.items(), key=lambda kv: kv[1], reverse=True))

    def best(self, text: str, slots: Mapping[str, Any] | None = None, min_score: float = MIN_SCORE) -> str | None:
        """The node ``text`` performs: an exact template match first, else the best cosine above ``min_score``."""
        from compiler.render import match_node

        exact = match_node(self.fc, {"role": "assistant", "content": text}, {k: str(v) for k, v in (slots or {}).items()},
                           candidates=self.nodes)
        if exact is not None:
            return exact
        ranked = self.scores(text, slots)
        top = next(iter(ranked.items()), None)
        return top[0] if top and top[1] >= min_score else None

    def fits(self, node_id: str, text: str, slots: Mapping[str, Any] | None = None, tie: float = 0.02) -> bool:
        """Whether ``text`` performs ``node_id``: it ranks first, or ties with the first (nodes worded
        alike), or matches the node's template exactly. The cheap ranking goes first: the teacher asks
        this once per turn, tens of thousands of times in a run."""
        ranked = self.scores(text, slots)
        mine = ranked.get(node_id, 0.0)
        top = next(iter(ranked.values()), 0.0)
        if mine >= MIN_SCORE and mine >= top - tie:
            return True
        return self.best(text, slots) == node_id


_JUDGES: dict[tuple[int, tuple[str, ...] | None], tuple[Flowchart, NodeJudge]] = {}
_LOCK = threading.Lock()


def judge_for(fc: Flowchart, candidates: Iterable[str] | None = None) -> NodeJudge:
    """A cached ``NodeJudge`` for this chart object (the gate asks once per turn; building costs more)."""
    key = (id(fc), tuple(candidates) if candidates is not None else None)
    with _LOCK:
        hit = _JUDGES.get(key)
        if hit is not None and hit[0] is fc:
            return hit[1]
        judge = NodeJudge(fc, key[1])
        if len(_JUDGES) > 64:
            _JUDGES.clear()
        _JUDGES[key] = (fc, judge)
        return judge


def node_of_reply(
    fc: Flowchart, candidates: Iterable[str] | None, text: str, slots: Mapping[str, Any] | None = None
) -> str | None:
    """The node a free-text agent turn performs among ``candidates`` (all speaking nodes when None), or None.

    This is the one call the eval gate makes for a text turn that ``render.match_node`` cannot place.
    """
    return judge_for(fc, candidates).best(text, slots)
