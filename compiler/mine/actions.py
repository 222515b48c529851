"""Each assistant turn as an action label: what the agent did, not the words it used.

- a tool call is named by its tool: ``tool:search_flights``;
- a reply is named by the step the app said it was at (``step:<step line>``), when the
  app sends one (a per-step system message, or a step line in the system text);
- otherwise replies are clustered by their words (``say:<most frequent reply>``): TF-IDF
  over the replies with slot values and digits masked, then agglomerative clustering
  with a cosine distance threshold. Both are deterministic: the same traffic gives the
  same labels.

The fitted :class:`ActionModel` labels new conversations the same way (held-out ones for
fitness, a compiled model's replies for the replay gate).

Example::

    labels, model = label_actions(traces, split, slots)
    model.text_label("I found flight SK101 ...", {})
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.cluster import AgglomerativeClustering
from sklearn.feature_extraction.text import TfidfVectorizer

from compiler.mine.slots import SlotFinding, value_text
from compiler.mine.static import StaticSplit
from compiler.mine.traces import Trace, Turn

TOOL, STEP, SAY = "tool:", "step:", "say:"
_DIGITS = re.compile(r"\d+")


def tool_label(tool: str, arg: str | None = None, value: str | None = None) -> str:
    """``tool:file_claim``, or ``tool:file_claim(claim_type=motor)`` when an argument's value names the step."""
    return f"{TOOL}{tool}({arg}={value})" if arg is not None else f"{TOOL}{tool}"


def tool_of(label: str) -> str:
    """The tool a tool label calls."""
    return label[len(TOOL):].split("(", 1)[0]


def _vectorizer() -> TfidfVectorizer:
    # Capped vocabulary: long replies have hundreds of thousands of distinct bigrams.
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=20_000)


def centroids_of(vectorizer: TfidfVectorizer, groups: Sequence[Sequence[str]]) -> sparse.csr_matrix:
    """One unit-length TF-IDF centroid per group of texts, as sparse rows.

    Sparse because most clusters use a few hundred of the 20,000 features: 2,000 clusters of
    unrelated replies took 1.2 GB and minutes as dense rows.
    """
    if not groups:
        return sparse.csr_matrix((0, 0))
    flat = [t for texts in groups for t in texts]
    owner = np.repeat(np.arange(len(groups)), [len(texts) for texts in groups])
    member = sparse.csr_matrix((np.ones(len(flat)), (owner, np.arange(len(flat)))), shape=(len(groups), len(flat)))
    sums = sparse.csr_matrix(member @ vectorizer.transform(flat))  # one transform, summed per group
    norms = np.sqrt(np.asarray(sums.multiply(sums).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms) @ sums)


def normalise_reply(text: str, slots: SlotFinding | None, binding: Mapping[str, Sequence[str]]) -> str:
    """A reply's words with this conversation's slot values and all digits masked, lower-cased."""
    if slots is not None:
        text = slots.mask(text, binding)
    return " ".join(_DIGITS.sub("0", text).lower().split())


@dataclass
class ActionModel:
    """Labels turns the way the mined traffic was labelled (see the module docstring)."""

    split: StaticSplit
    slots: SlotFinding
    vectorizer: TfidfVectorizer | None
    centroids: sparse.csr_matrix  # one unit-length row per text label
    text_labels: list[str]
    min_similarity: float = 0.3
    keys: dict[str, str] = field(default_factory=dict)  # tool -> the argument whose value names the step

    def text_label(self, text: str, binding: Mapping[str, Sequence[str]]) -> tuple[str | None, float]:
        """The text action whose replies ``text`` resembles most, and how much (cosine); None below the floor."""
        if self.vectorizer is None or not self.text_labels:
            return None, 0.0
        vec = self.vectorizer.transform([normalise_reply(text, self.slots, binding)]).toarray()[0]
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            return None, 0.0
        sims = np.asarray(self.centroids @ (vec / norm)).ravel()
        best = int(np.argmax(sims))
        score = float(sims[best])
        return (self.text_labels[best] if score >= self.min_similarity else None), score

    def label(self, turn: Turn, binding: Mapping[str, Sequence[str]]) -> str | None:
        """A turn's action: its tool, its known step, else the nearest reply cluster (None: like nothing seen)."""
        if turn.is_call:
            return call_label(turn, self.keys)
        key = self.split.step_key(turn.system)
        if key and STEP + key in self.text_labels:
            return STEP + key
        return self.text_label(turn.text, binding)[0]


MAX_CLUSTERED = 2_000  # agglomerative clustering is quadratic in memory: 2,000 texts take 32 MB


def _cluster(texts: list[str], counts: Counter[str], distance: float) -> dict[str, str]:
    """Map each distinct normalised reply to its cluster's name (the cluster's most frequent reply).

    ``texts`` come most frequent first; past :data:`MAX_CLUSTERED` the rarer ones join
    the nearest cluster instead of being clustered themselves.
    """
    if len(texts) == 1:
        return {texts[0]: texts[0]}
    head, tail = texts[:MAX_CLUSTERED], texts[MAX_CLUSTERED:]
    vectorizer = _vectorizer()
    matrix = vectorizer.fit_transform(head)  # sparse, rows of unit length
    # Distances from the sparse product: a dense TF-IDF matrix of long replies (2,000 x 50,000 bigrams)
    # would take 800 MB, the distance matrix takes 32 MB.
    dist = np.clip(1.0 - (matrix @ matrix.T).toarray(), 0.0, None)
    groups = AgglomerativeClustering(
        n_clusters=None, distance_threshold=distance, metric="precomputed", linkage="average"
    ).fit_predict(dist)
    members: dict[int, list[str]] = {}
    for text, g in zip(head, groups, strict=True):
        members.setdefault(int(g), []).append(text)
    if tail:
        # Each rarer reply joins the cluster of the clustered reply it is most like (sparse products only).
        nearest = np.asarray((vectorizer.transform(tail) @ matrix.T).argmax(axis=1)).ravel()
        for text, i in zip(tail, nearest, strict=True):
            members[int(groups[int(i)])].append(text)
    out: dict[str, str] = {}
    for group in members.values():
        name = max(group, key=lambda t: (counts[t], -len(t), t))
        out.update({t: name for t in group})
    return out


def call_label(turn: Turn, keys: Mapping[str, str]) -> str:
    tool = turn.tool or ""
    arg = keys.get(tool)
    if arg is None:
        return tool_label(tool)
    value = value_text(turn.arguments.get(arg))
    return tool_label(tool, arg, value if value is not None else "?")


def step_arguments(
    traces: Sequence[Trace], labels: Sequence[Sequence[str | None]], slots: SlotFinding, max_values: int = 10,
    max_overlap: float = 0.2,
) -> dict[str, str]:
    """Tools whose call sites differ by a constant argument: ``file_claim`` with ``claim_type: motor`` after
    the motor questions, ``home`` after the home ones. Such an argument names the step, not the scenario.

    An argument qualifies when it is no slot, takes 2 to ``max_values`` values, and the actions before
    calls with different values overlap by less than ``max_overlap`` (each value has its own place).
    """
    before: dict[tuple[str, str], dict[str, Counter[str]]] = {}
    for trace, row in zip(traces, labels, strict=True):
        for turn in trace.turns:
            if not turn.is_call:
                continue
            tool = turn.tool or ""
            prev = row[turn.index - 1] if turn.index else "^"
            for arg, raw in turn.arguments.items():
                value = value_text(raw)
                if value is None or (tool, str(arg)) in slots.arg_slots:
                    continue
                per_value = before.setdefault((tool, str(arg)), {})
                per_value.setdefault(value, Counter())[str(prev)] += 1
    keys: dict[str, str] = {}
    for (tool, arg), per_value in before.items():
        if tool in keys or not 2 <= len(per_value) <= max_values:
            continue
        ctx = list(per_value.values())
        if all(_share(a, b) < max_overlap for i, a in enumerate(ctx) for b in ctx[i + 1:]):
            keys[tool] = arg
    return keys


def _share(a: Counter[str], b: Counter[str]) -> float:
    """Overlap of two distributions (1.0: the same, 0.0: disjoint)."""
    ta, tb = sum(a.values()) or 1, sum(b.values()) or 1
    return sum(min(a[k] / ta, b[k] / tb) for k in a.keys() & b.keys())


def split_by_place(
    labels: list[list[str]], normal: Mapping[tuple[int, int], str], min_turns: int = 3
) -> list[list[str]]:
    """Split a reply cluster whose wordings never follow the same action.

    Words alone join a step into another whose reply it contains ("A plumber is on the way.
    Roughly how much is the damage worth?" and "Roughly how much is the damage worth?"). The
    wordings of one step are spread over the places the step is reached from; two steps'
    wordings each keep to their own. Wordings are grouped when they share a preceding action;
    groups of at least ``min_turns`` turns become clusters of their own, named by their most
    frequent wording.
    """
    before: dict[str, dict[str, Counter[str]]] = {}  # label -> wording -> preceding actions
    for ti, row in enumerate(labels):
        for k, lab in enumerate(row):
            if lab.startswith(SAY):
                before.setdefault(lab, {}).setdefault(normal[(ti, k)], Counter())[row[k - 1] if k else "^"] += 1
    rename: dict[tuple[str, str], str] = {}
    for lab, wordings in before.items():
        if len(wordings) < 2:
            continue
        texts = sorted(wordings, key=lambda t: (-sum(wordings[t].values()), t))
        groups: list[tuple[set[str], list[str]]] = []  # (preceding actions, wordings)
        for text in texts:
            prev = set(wordings[text])
            touching = [g for g in groups if g[0] & prev]
            if not touching:
                groups.append((set(prev), [text]))
                continue
            first = touching[0]
            first[0].update(prev)
            first[1].append(text)
            for other in touching[1:]:  # this wording joins groups that were apart
                first[0].update(other[0])
                first[1].extend(other[1])
                groups.remove(other)
        if len(groups) < 2:
            continue
        sized = [(sum(sum(wordings[t].values()) for t in g[1]), g[1]) for g in groups]
        if sum(1 for n, _ in sized if n >= min_turns) < 2:
            continue
        for n, members in sized:
            if n >= min_turns and members[0] != texts[0] and lab != SAY + members[0]:
                rename.update({(lab, t): SAY + members[0] for t in members})
    if not rename:
        return labels
    return [
        [rename.get((lab, normal[(ti, k)]), lab) if lab.startswith(SAY) else lab for k, lab in enumerate(row)]
        for ti, row in enumerate(labels)
    ]


def merge_paraphrases(
    labels: list[list[str]],
    traces: Sequence[Trace],
    slots: SlotFinding,
    normal: Mapping[tuple[int, int], str],
    min_context: float = 0.5,
    min_words: float = 0.2,
    same_place: float = 0.8,
    min_turns: int = 2,
) -> list[list[str]]:
    """Merge reply clusters that are one step worded two ways.

    Words alone split a step whose replies a frontier phrases differently ("Your flight is
    booked" / "Done! Flight booked"). Such clusters sit in the same place of the
    procedure: they follow the same actions, lead to the same actions, and answer the same
    user words or tool results. Two different steps after one branch differ in the
    latter (the user said yes to one, no to the other), so all three must overlap by
    ``min_context``, and the replies must still share some words (cosine ``min_words``);
    clusters whose contexts overlap by ``same_place`` merge whatever their words, since
    no branch of the procedure can tell them apart.
    """
    ctx: dict[str, tuple[Counter[str], Counter[str], Counter[str]]] = {}
    texts: dict[str, list[str]] = {}
    for ti, (row, trace) in enumerate(zip(labels, traces, strict=True)):
        for k, lab in enumerate(row):
            if not lab.startswith(SAY):
                continue
            before, after, heard = ctx.setdefault(lab, (Counter(), Counter(), Counter()))
            before[row[k - 1] if k else "^"] += 1
            after[row[k + 1] if k + 1 < len(row) else "$"] += 1
            turn = trace.turns[k]
            cue = turn.user[-1] if turn.user else turn.results[-1] if turn.results else ""
            heard[normalise_reply(cue, slots, slots.bindings[ti])] += 1
            texts.setdefault(lab, []).append(normal[(ti, k)])
    names = sorted(ctx, key=lambda lab: (-sum(ctx[lab][0].values()), lab))
    # Only a cluster seen `min_turns` times has a context to compare with (and unrelated one-off
    # replies would otherwise make this quadratic in their number); a rarer one may join it.
    hosts = [i for i, n in enumerate(names) if sum(ctx[n][0].values()) >= min_turns]
    if len(names) < 2 or not hosts:
        return labels
    vectorizer = _vectorizer().fit([t for n in names for t in texts[n]])
    rows = centroids_of(vectorizer, [texts[n] for n in names])
    sims = (rows[hosts] @ rows.T).toarray()
    position = {n: j for j, n in enumerate(names)}
    # Only clusters sharing something in all three contexts can overlap in all three.
    index: list[dict[str, set[str]]] = [{}, {}, {}]
    for n in names:
        for part, seen in zip(index, ctx[n], strict=True):
            for key in seen:
                part.setdefault(key, set()).add(n)
    into: dict[str, str] = {}
    for h, i in enumerate(hosts):
        a = names[i]
        if a in into:
            continue
        near = set.intersection(
            *(set().union(*(part[key] for key in seen)) for part, seen in zip(index, ctx[a], strict=True))
        )
        for j in sorted(position[b] for b in near if position[b] > i):
            b = names[j]
            if b in into:
                continue
            shares = [_share(x, y) for x, y in zip(ctx[a], ctx[b], strict=True)]
            # Replies that nothing in the conversation tells apart are one step, whatever their words.
            if min(shares) >= same_place or (min(shares) >= min_context and sims[h, j] >= min_words):
                into[b] = a  # the more frequent wording names the step
    return [[into.get(lab, lab) for lab in row] for row in labels]


def label_actions(
    traces: Sequence[Trace],
    split: StaticSplit,
    slots: SlotFinding,
    distance: float = 0.5,
    min_similarity: float = 0.3,
) -> tuple[list[list[str]], ActionModel]:
    """Label every assistant turn; also return the model that labels new conversations alike."""
    labels: list[list[str | None]] = []  # None until the reply is clustered
    unlabelled: Counter[str] = Counter()
    normal: dict[tuple[int, int], str] = {}
    for ti, trace in enumerate(traces):
        row: list[str | None] = []
        for turn in trace.turns:
            if turn.is_call:
                row.append(tool_label(turn.tool or ""))
                continue
            normal[(ti, turn.index)] = normalise_reply(turn.text, slots, slots.bindings[ti])
            key = split.step_key(turn.system)
            if key:
                row.append(STEP + key)
            else:
                row.append(None)
                unlabelled[normal[(ti, turn.index)]] += 1
        labels.append(row)
    if unlabelled:
        texts = sorted(unlabelled, key=lambda t: (-unlabelled[t], t))
        names = _cluster(texts, unlabelled, distance)
        for ti, row in enumerate(labels):
            for k, lab in enumerate(row):
                if lab is None:
                    row[k] = SAY + names[normal[(ti, k)]]
    done: list[list[str]] = [[str(lab) for lab in row] for row in labels]
    if unlabelled:
        done = split_by_place(done, normal)
        done = merge_paraphrases(done, traces, slots, normal)
    keys = step_arguments(traces, done, slots)
    if keys:
        for trace, walk in zip(traces, done, strict=True):
            for turn in trace.turns:
                if turn.is_call:
                    walk[turn.index] = call_label(turn, keys)
    # Centroids of every text action, for labelling replies the miner has not seen.
    by_label: dict[str, list[str]] = {}
    for (ti, k), text in normal.items():
        by_label.setdefault(done[ti][k], []).append(text)
    vectorizer: TfidfVectorizer | None = None
    centroids = sparse.csr_matrix((0, 0))
    text_labels = sorted(by_label)
    if text_labels:
        vectorizer = _vectorizer()
        vectorizer.fit([t for lab in text_labels for t in by_label[lab]])
        centroids = centroids_of(vectorizer, [by_label[lab] for lab in text_labels])
    return done, ActionModel(split, slots, vectorizer, centroids, text_labels, min_similarity, keys)
