"""Teacher mode: a teacher model writes the agent turns of a path and a simulator model plays the user.

Tool calls and results stay rendered from the chart (they must be exact); only wording comes from
the models, through litellm by default::

    conv = render_teacher(fc, path, "openai/gpt-4o-mini", "openai/gpt-4o-mini", seed=0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from compiler.flowchart import Edge, Flowchart, fill
from compiler.paths import FlowPath
from compiler.render import _call_id, _call_message, _outcome, _plan, _rng, pick_slots

Complete = Callable[[str, list[dict[str, Any]]], str]


def litellm_complete(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The default seam to a real model; ``kwargs`` go to ``litellm.completion`` (api_base, api_key...)."""
    import litellm

    try:
        resp = litellm.completion(model=model, messages=messages, **{"temperature": 0.7, **kwargs})
    except Exception as exc:  # litellm raises many provider-specific types
        raise RuntimeError(
            f"teacher/simulator model `{model}` failed: {exc}; check the model name and its API key"
        ) from exc
    return str(resp.choices[0].message.content or "").strip()


def render_teacher(
    fc: Flowchart,
    path: FlowPath,
    teacher_model: str,
    simulator_model: str,
    seed: int,
    *,
    complete: Complete | None = None,
    completion_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One conversation along ``path`` where a teacher model writes the agent turns.

    The teacher sees each node's instruction and the slot values; a separate simulator
    plays the user and sees only a goal (the branch condition to convey and the
    scenario's values), never the flowchart. Tool calls and results stay rendered from
    the chart so they are exact. ``complete(model, messages) -> str`` is the seam to
    the models (litellm by default, called with ``completion_kwargs``).
    """
    extra = dict(completion_kwargs or {})
    call = complete or (lambda model, msgs: litellm_complete(model, msgs, **extra))
    rng = _rng(fc, path, seed, 0, "teacher")
    slots = pick_slots(fc, rng)
    messages: list[dict[str, Any]] = [{"role": "system", "content": fc.system_prompt}]
    nodes: list[str] = []
    call_id = ""
    facts = "; ".join(f"{k} = {v}" for k, v in slots.items())
    for step in _plan(fc, path):
        role = step["role"]
        if role == "user":
            edge: Edge = step["edge"]
            goal = edge.condition or "continue the conversation"
            example = fill(rng.choice(edge.utterances), slots)
            sim_prompt = [
                {
                    "role": "system",
                    "content": (
                        "You are a customer talking to an assistant. Reply with ONE short message, in your own words, "
                        f"that makes this clear: {goal}. Facts about you: {facts}. "
                        f'A message like this would do: "{example}". Output only the message.'
                    ),
                },
                *_flip(messages[1:]),
            ]
            messages.append({"role": "user", "content": call(simulator_model, sim_prompt) or example})
            continue
        node = fc.nodes[step["node"]]
        if role == "assistant":
            template = fill(node.say[0], slots) if node.say else ""
            instruction = (
                f"{fc.system_prompt}\n\nYour next reply must do this: {fill(node.text, slots)}. "
                f"Known values: {facts}. "
                + (f'Say essentially: "{template}". ' if template else "")
                + "Reply with the message only."
            )
            teacher_msgs = [{"role": "system", "content": instruction}, *_visible(messages[1:])]
            text = call(teacher_model, teacher_msgs) or template or fill(node.text, slots)
            messages.append({"role": "assistant", "content": text})
            nodes.append(node.id)
        elif role == "call":
            call_id = _call_id(rng)
            messages.append(_call_message(fc, node, slots, call_id))
            nodes.append(node.id)
        else:
            result = step["override"] if step["override"] is not None else node.result
            messages.append({"role": "tool", "tool_call_id": call_id, "content": fill(result or "{}", slots)})
    terminal, outcome = _outcome(fc, path)
    return {
        "messages": messages,
        "tools": [dict(t) for t in fc.tools],
        "tiergate": {
            "path_id": path.id,
            "workflow": fc.name,
            "terminal": terminal,
            "outcome": outcome,
            "slots": slots,
            "nodes": nodes,
            "source": "teacher",
            "teacher": teacher_model,
            "simulator": simulator_model,
            "seed": seed,
        },
    }


def _visible(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History as plain text turns, so any chat model (with or without tool support) can read it."""
    out = []
    for m in history:
        if m["role"] == "tool":
            out.append({"role": "user", "content": f"[tool result] {m['content']}"})
        elif m.get("tool_calls"):
            f = m["tool_calls"][0]["function"]
            out.append({"role": "assistant", "content": f"[called {f['name']}({f['arguments']})]"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def _flip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The simulator's view: the agent's words arrive as `user`, its own as `assistant`; tools are hidden."""
    out = []
    for m in history:
        if m["role"] == "tool" or m.get("tool_calls"):
            continue
        out.append({"role": "assistant" if m["role"] == "user" else "user", "content": m["content"]})
    return out
