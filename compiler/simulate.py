"""python -m compiler.simulate --model RUN/model --flowchart FC.yaml --data DATA/eval.jsonl [--limit 5]

A user simulator that drives a model turn by turn along a held-out path: it replays the path's user
utterances and tool results (from the rendered reference conversation) and asks the model for every
agent turn, with the model's own earlier turns in the history, as in deployment. A turn that leaves
the flowchart ends the conversation (a replaying user cannot answer an off-chart message); the turns
it did not reach count as wrong.

Policies are plain callables ``(messages, tools) -> assistant message``: ``ModelPolicy`` (greedy
decoding with a transformers model), ``ReplayPolicy`` (an oracle replaying the reference),
``ConstantPolicy`` (a known-bad one) and ``LiteLLMPolicy`` (a teacher model behind litellm).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .copying import Sources

Message = dict[str, Any]
NodeMatcher = Callable[[Any, Mapping[str, Any], Mapping[str, str]], "str | None"]


class Policy(Protocol):
    def __call__(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> Message: ...


class SimulationError(ValueError):
    """A reference conversation cannot be replayed; the message names it."""


@dataclass
class Turn:
    """One agent turn the flowchart expects, and what the model did there."""

    index: int
    expected_node: str
    got_node: str | None
    node_ok: bool
    expects_tool: bool
    tool_ok: bool | None  # None when neither side called a tool
    message: Message


@dataclass
class Transcript:
    path_id: str
    expected_nodes: list[str]
    terminal: str
    expected_tools: list[bool] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    derailed_at: int | None = None
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.derailed_at is None and len(self.turns) == len(self.expected_nodes)


def canonical_args(arguments: Any) -> Any:
    """Tool arguments as comparable data: JSON strings are parsed, other values kept as-is."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def tool_calls_equal(got: Message, expected: Message) -> bool:
    """Exact in name and arguments (argument order and JSON spacing do not matter)."""
    from .toolcalls import calls_match

    return calls_match(got, expected)


def default_matcher(fc: Any, message: Mapping[str, Any], slots: Mapping[str, str]) -> str | None:
    from .render import match_node

    return match_node(fc, dict(message), slots)


def paraphrase_matcher(fc: Any, message: Mapping[str, Any], slots: Mapping[str, str]) -> str | None:
    """For teacher-rendered references: a text turn is judged by the node it performs, not by template
    wording (a model trained on a teacher's paraphrases paraphrases too); tool calls as before."""
    content = message.get("content")
    if message.get("tool_calls") or not isinstance(content, str) or not content.strip():
        return default_matcher(fc, message, slots)
    from .node_judge import node_of_reply

    return node_of_reply(fc, None, content, slots)


def simulate(
    reference: Mapping[str, Any],
    policy: Policy,
    fc: Any,
    matcher: NodeMatcher | None = None,
    max_turns: int = 40,
) -> Transcript:
    """Drive ``policy`` along the path of one rendered reference conversation."""
    meta = reference.get("tiergate") or {}
    expected_nodes = list(meta.get("nodes") or [])
    ref_msgs = list(reference.get("messages") or [])
    n_assist = sum(1 for m in ref_msgs if m.get("role") == "assistant")
    if not expected_nodes or len(expected_nodes) != n_assist:
        raise SimulationError(
            f"conversation `{meta.get('path_id', '?')}` has {n_assist} assistant messages but "
            f"{len(expected_nodes)} entries in `tiergate.nodes`; render it with compiler.render."
        )
    match = matcher or (paraphrase_matcher if meta.get("source") == "teacher" else default_matcher)
    slots = meta.get("slots") or {}
    tools = list(reference.get("tools") or [])
    out = Transcript(path_id=str(meta.get("path_id", "")), expected_nodes=expected_nodes,
                     terminal=str(meta.get("terminal", expected_nodes[-1])),
                     expected_tools=[bool(m.get("tool_calls")) for m in ref_msgs if m.get("role") == "assistant"])
    history: list[Message] = []
    last_calls: list[dict[str, Any]] = []
    k = 0
    for m in ref_msgs:
        role = m.get("role")
        if role != "assistant":
            msg = copy.deepcopy(m)
            if role == "tool" and last_calls:  # answer the model's own call id, as a real tool runner would
                msg["tool_call_id"] = last_calls.pop(0).get("id", msg.get("tool_call_id"))
            history.append(msg)
            continue
        if k >= max_turns:
            out.derailed_at = k
            out.error = f"cut off after {max_turns} agent turns"
            break
        try:
            got = policy(history, tools)
        except Exception as exc:  # a policy failure is a failed conversation, not a crashed eval
            out.derailed_at = k
            out.error = f"{type(exc).__name__}: {exc}"
            break
        got = {"role": "assistant", "content": got.get("content"), **(
            {"tool_calls": got["tool_calls"]} if got.get("tool_calls") else {})}
        node = match(fc, got, slots)
        expects_tool = bool(m.get("tool_calls"))
        tool_ok = tool_calls_equal(got, m) if (expects_tool or got.get("tool_calls")) else None
        node_ok = node == expected_nodes[k]
        out.turns.append(Turn(k, expected_nodes[k], node, node_ok, expects_tool, tool_ok, got))
        history.append(got)
        last_calls = list(got.get("tool_calls") or [])
        if not node_ok or tool_ok is False:
            out.derailed_at = k
            break
        k += 1
    out.messages = history
    return out


class ReplayPolicy:
    """Oracle: answers with the reference's next assistant message (a known-good model)."""

    def __init__(self, reference: Mapping[str, Any]) -> None:
        self.replies = [m for m in reference["messages"] if m.get("role") == "assistant"]

    def __call__(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> Message:
        k = sum(1 for m in messages if m.get("role") == "assistant")
        return copy.deepcopy(self.replies[k])


class ConstantPolicy:
    """Known-bad: always says the same thing, whatever the flowchart expects."""

    def __init__(self, text: str = "I am not sure how to help with that.") -> None:
        self.text = text

    def __call__(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> Message:
        return {"role": "assistant", "content": self.text}


def _cache_argument(model: Any) -> str:
    """The KV-cache keyword of this transformers release: `cache` from 5.x (where `past_key_values`
    warns and is removed in 5.40), `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a turn: the generation config's eos ids (the template's end of turn, written at
    training time) and the tokenizer's eos, the same set vLLM stops on."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


class ModelPolicy:
    """Greedy decoding with a transformers causal LM through its chat template (eval is deterministic)."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 96,
                 copied: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> None:
        from .copying import CopyRule

        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        # tool arguments decoded as copies of the conversation (compiler/copying.py; copying.json of the model)
        self.copy = CopyRule(tokenizer, copied or {})
        self.model.eval()
        self.stop_ids = stop_token_ids(model, tokenizer)
        # the end token and other specials are cut from the text the parser reads, as vLLM does
        self.end_tokens = [tokenizer.convert_ids_to_tokens(i) for i in sorted(self.stop_ids)]
        self.special_tokens = [t for t in tokenizer.all_special_tokens if t not in self.end_tokens]

    @classmethod
    def from_folder(cls, folder: Any, max_new_tokens: int = 96) -> ModelPolicy:
        """A trained model folder (or artifact) with the decoding rules written beside its weights."""
        from .base_model import load_trained
        from .copying import read_copied

        model, tok = load_trained(folder)
        return cls(model, tok, max_new_tokens, read_copied(folder))

    def copy_sources(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = ()) -> Sources | None:
        """What copied argument values may be taken from (None when this model copies none)."""
        return self.copy.sources(messages, tools) if self.copy else None

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> list[int]:
        from .templates import chat_messages

        # as in training: earlier calls' arguments become JSON objects (clients and our parser send strings),
        # else a template applying `tojson` prompts with strings of strings the model never saw
        msgs, tool_list = chat_messages({"messages": messages, "tools": list(tools)})
        out = self.tokenizer.apply_chat_template(
            msgs, tools=tool_list or None, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(out["input_ids"])

    def generate_ids(self, ids: list[int], max_new_tokens: int | None = None,
                     sources: Sources | None = None) -> Any:
        """Yield new token ids one at a time (greedy, KV cache): serve streams from this.

        With ``sources`` (``copy_sources`` of the prompt's messages), the value of a copied tool argument
        is chosen among the tokens that keep it a span of them (compiler/copying.py).
        """
        import torch

        limit = getattr(self.model.config, "max_position_embeddings", 2048)
        budget = max_new_tokens or self.max_new_tokens
        ids = ids[-max(1, limit - budget):]
        cache_arg = _cache_argument(self.model)
        device = getattr(self.model, "device", "cpu")
        with torch.inference_mode():
            inp = torch.tensor([ids], dtype=torch.long, device=device)
            past = None
            new: list[int] = []
            for _ in range(budget):
                res = self.model(input_ids=inp, use_cache=True, **{cache_arg: past})
                past = getattr(res, cache_arg)
                logits = res.logits[0, -1]
                nxt = int(logits.argmax())
                if sources is not None:
                    text = self.tokenizer.decode(new, skip_special_tokens=False)
                    allowed = self.copy.allowed(sources, text) if new else None
                    if allowed:
                        nxt = allowed[int(logits[allowed].argmax())]
                    elif self.copy.quotes:  # a value quoted in a reply: the best-scored token keeping it a copy
                        nxt = self._quoting(sources, new, text, logits, nxt)
                if nxt in self.stop_ids:
                    return
                new.append(nxt)
                yield nxt
                inp = torch.tensor([[nxt]], dtype=torch.long, device=device)

    def _quoting(self, sources: Sources, new: list[int], text: str, logits: Any, best: int, tries: int = 32) -> int:
        def after(i: int) -> str:  # the reply with token i; an end token ends its last word
            return text + " " if i in self.stop_ids else self.tokenizer.decode(new + [i], skip_special_tokens=False)

        if self.copy.reply_ok(sources, text, after(best)):
            return best
        ids = self.copy.reply_tokens(sources, text)  # it meant a value: the best-scored one of the sources
        if ids:
            return ids[int(logits[ids].argmax())]
        for i in logits.topk(min(tries, logits.shape[-1])).indices.tolist():
            if self.copy.reply_ok(sources, text, after(int(i))):
                return int(i)
        return best  # none of them: unconstrained rather than stuck

    def complete_text(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]],
                      max_new_tokens: int | None = None) -> tuple[str, int, int]:
        ids = self.prompt_ids(messages, tools)
        new = list(self.generate_ids(ids, max_new_tokens, self.copy_sources(messages, tools)))
        return self.tokenizer.decode(new, skip_special_tokens=False), len(ids), len(new)

    def __call__(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> Message:
        from .toolcalls import parse_assistant_text

        text, _, _ = self.complete_text(messages, tools)
        return parse_assistant_text(text, self.end_tokens, self.special_tokens)


class LiteLLMPolicy:
    """A teacher behind litellm; ``procedure`` (the flowchart's instructions) is prepended as its system prompt."""

    def __init__(self, model: str, procedure: str | None = None, **kwargs: Any) -> None:
        self.model = model
        self.procedure = procedure
        self.kwargs = kwargs

    def __call__(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]) -> Message:
        import litellm

        msgs = [dict(m) for m in messages]
        if self.procedure:
            msgs = [{"role": "system", "content": self.procedure}, *msgs]
        resp = litellm.completion(model=self.model, messages=msgs, tools=list(tools) or None, temperature=0,
                                  **self.kwargs)
        msg = resp.choices[0].message
        out: Message = {"role": "assistant", "content": msg.content}
        if getattr(msg, "tool_calls", None):
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
                for c in msg.tool_calls
            ]
        return out


def procedure_text(fc: Any) -> str:
    """The flowchart spelled out for a teacher: every node's instruction and its outgoing conditions."""
    lines = [fc.system_prompt, "", "Follow this procedure exactly:"]
    for node in fc.nodes.values():
        if node.kind == "decision":
            lines.append(f"- [{node.id}] decide: {node.text}")
        elif node.kind == "tool":
            lines.append(f"- [{node.id}] call tool `{node.tool}` ({node.text})")
        else:
            lines.append(f"- [{node.id}] {node.text}" + (f" e.g. \"{node.say[0]}\"" if node.say else ""))
        for e in fc.out_edges(node.id):
            lines.append(f"    -> {e.target}" + (f" when {e.condition}" if e.condition else ""))
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compiler.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="trained model folder")
    parser.add_argument("--flowchart", required=True, help="the workflow's flowchart")
    parser.add_argument("--data", required=True, help="held-out rendered conversations (JSONL)")
    parser.add_argument("--limit", type=int, default=5, help="conversations to drive")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from .formats import load_flowchart
    from .train import read_jsonl

    try:
        fc = load_flowchart(args.flowchart)
        policy = ModelPolicy.from_folder(args.model)
        rows = read_jsonl(args.data)[: args.limit]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        t = simulate(row, policy, fc)
        print(json.dumps({"path_id": t.path_id, "completed": t.completed, "derailed_at": t.derailed_at,
                          "turns": [asdict(x) | {"message": x.message} for x in t.turns]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
