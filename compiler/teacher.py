"""Teacher mode: a teacher model writes the agent turns of a path and a simulator model plays the user.

Tool calls and results stay rendered from the chart (they must be exact); only wording comes from
the models, through litellm by default::

    conv = render_teacher(fc, path, "openai/gpt-4o-mini", "openai/gpt-4o-mini", seed=0)

At scale (``compiler.teacher_run``) every call goes through ``TeacherClient``: a persistent cache
keyed by the exact request, retries with backoff, a budget, and one-line errors. Each teacher turn is
checked against its node (``compiler.node_judge``) and asked again when it wanders off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compiler.flowchart import Edge, Flowchart, fill
from compiler.node_judge import NodeJudge
from compiler.paths import FlowPath
from compiler.render import _plan, _rng, _row, _tool_step, pick_slots
from compiler.teacher_cache import TeacherCache, request_key

Complete = Callable[[str, list[dict[str, Any]]], str]


class TeacherError(ValueError):
    """The teacher run cannot go on; the message is one line that says what to do next."""


class TeacherUnavailable(TeacherError):
    """The teacher (or simulator) kept failing after every retry, or refused the request outright."""


class TeacherBudgetExceeded(TeacherError):
    """The estimate or the spending passed ``data.max_teacher_usd``."""


class OffNodeReply(Exception):
    """A teacher turn stayed off its node after every regeneration; its conversation is dropped."""

    def __init__(self, path_id: str, node: str, text: str) -> None:
        super().__init__(f"path `{path_id}`: teacher reply for node `{node}` is off the node: {one_line(text, 120)}")
        self.node = node


class Stopped(Exception):
    """The run is stopping (outage or budget): a conversation that needs a new call gives up."""


def one_line(text: Any, limit: int = 300) -> str:
    """Provider errors span lines and pages; a CLI error is one line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _litellm() -> Any:
    # Without this litellm fetches its price map over the network at import; the bundled copy suffices.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # else every failed call prints a "Give Feedback" banner to stdout
    return litellm


def litellm_complete(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """The default seam to a real model; ``kwargs`` go to ``litellm.completion`` (api_base, api_key...)."""
    litellm = _litellm()
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
    judge: NodeJudge | None = None,
    regenerations: int = 0,
    on_regenerate: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One conversation along ``path`` where a teacher model writes the agent turns.

    The teacher sees each node's instruction and the slot values; a separate simulator
    plays the user and sees only a goal (the branch condition to convey and the
    scenario's values), never the flowchart. Tool calls and results stay rendered from
    the chart so they are exact. ``complete(model, messages) -> str`` is the seam to
    the models (litellm by default, called with ``completion_kwargs``).

    With a ``judge``, a teacher turn that does not perform its node is asked again (a different
    request, so a cache cannot answer it with the same reply) up to ``regenerations`` times, then
    ``OffNodeReply`` drops the conversation: a turn labelled with a node it does not perform would
    teach the model the wrong step.
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
            history = _visible(messages[1:])
            fallback = template or fill(node.text, slots)
            text = call(teacher_model, [{"role": "system", "content": instruction}, *history]) or fallback
            attempt = 0
            while judge is not None and not judge.fits(node.id, text, slots):
                if attempt >= regenerations:
                    raise OffNodeReply(path.id, node.id, text)
                attempt += 1
                if on_regenerate is not None:
                    on_regenerate(node.id)
                again = (
                    f"{instruction} Draft {attempt + 1}: an earlier draft did not do this step. "
                    "Do exactly this step and nothing else."
                )
                text = call(teacher_model, [{"role": "system", "content": again}, *history]) or fallback
            messages.append({"role": "assistant", "content": text})
            nodes.append(node.id)
        else:
            call_id = _tool_step(fc, step, slots, rng, call_id, messages, nodes)
    return _row(fc, path, messages, slots, nodes, source="teacher", teacher=teacher_model,
                simulator=simulator_model, seed=seed)


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


# ------------------------------------------------------------------ the paid seam


@dataclass(frozen=True)
class Price:
    """USD per token for one model, and where the figure came from (said in the estimate line)."""

    usd_in: float
    usd_out: float
    source: str

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return prompt_tokens * self.usd_in + completion_tokens * self.usd_out


def model_price(model: str, usd_per_mtok_in: float | None = None, usd_per_mtok_out: float | None = None) -> Price | None:
    """The configured price, else litellm's price map, else None (unknown: no budget can be enforced)."""
    if usd_per_mtok_in is not None or usd_per_mtok_out is not None:
        return Price((usd_per_mtok_in or 0.0) / 1e6, (usd_per_mtok_out or 0.0) / 1e6, "configured price")
    try:
        info = _litellm().get_model_info(model)
    except Exception:  # litellm raises a bare Exception for models missing from its map
        return None
    usd_in, usd_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if usd_in is None and usd_out is None:
        return None
    return Price(float(usd_in or 0.0), float(usd_out or 0.0), "litellm price map")


def _retryable(exc: Exception) -> bool:
    """A wrong key, model or request fails the same way every time; anything else may pass on a retry."""
    litellm = _litellm()
    final = tuple(
        t for t in (getattr(litellm, n, None) for n in (
            "AuthenticationError", "PermissionDeniedError", "NotFoundError", "BadRequestError",
        )) if isinstance(t, type)
    )
    return not isinstance(exc, final)


class TeacherClient:
    """The one door to the paid models: cache first, then litellm with retries, counting what it pays.

    ``complete`` fits ``render_teacher``'s seam and is called from many worker threads at once. After
    the first fatal error (an outage that outlived its retries, the budget) ``stop`` is set: calls the
    cache can answer still return (so finished work is kept), every other call raises ``Stopped``.
    """

    def __init__(
        self,
        cache: TeacherCache,
        *,
        temperature: float = 0.7,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        retries: int = 3,
        retry_wait_s: float = 2.0,
        max_usd: float | None = None,
        prices: Mapping[str, Price | None] | None = None,
    ) -> None:
        self.cache = cache
        self.params: dict[str, Any] = {"temperature": temperature}  # part of the cache key
        self.transport: dict[str, Any] = {"timeout": timeout_s, "num_retries": 0, "max_retries": 0}
        if api_base:
            self.transport["api_base"] = api_base
        if api_key:
            self.transport["api_key"] = api_key
        self.retries = max(0, retries)
        self.retry_wait_s = retry_wait_s
        self.max_usd = max_usd
        self.prices = dict(prices or {})
        self.stop = threading.Event()
        self.failure: TeacherError | None = None
        self._lock = threading.Lock()
        self.calls = 0
        self.failed_attempts = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usd = 0.0

    def fail(self, exc: TeacherError) -> None:
        """Record the first fatal error and stop every worker at its next uncached call."""
        with self._lock:
            if self.failure is None:
                self.failure = exc
        self.stop.set()

    def complete(self, model: str, messages: list[dict[str, Any]]) -> str:
        key = request_key(model, messages, self.params)
        hit = self.cache.get(key)
        if hit is not None:
            with self._lock:
                self.cache_hits += 1
            return hit.reply
        if self.stop.is_set():
            raise Stopped()
        if self.max_usd is not None and self.usd >= self.max_usd:
            self.fail(TeacherBudgetExceeded(
                f"teacher spending reached the budget of ${self.max_usd:.2f} (--max-teacher-usd) after "
                f"{self.calls} calls (${self.usd:.4f})"
            ))
            raise Stopped()
        reply, prompt_tokens, completion_tokens = self._call(model, messages)
        price = self.prices.get(model)
        usd = price.cost(prompt_tokens, completion_tokens) if price else None
        self.cache.put(key, model, reply, prompt_tokens, completion_tokens, usd)
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.usd += usd or 0.0
        return reply

    def _call(self, model: str, messages: list[dict[str, Any]]) -> tuple[str, int, int]:
        litellm = _litellm()
        reason = ""
        tries = 0
        for attempt in range(self.retries + 1):
            if self.stop.is_set():
                raise Stopped()
            tries += 1
            try:
                resp = litellm.completion(model=model, messages=messages, **self.params, **self.transport)
            except Exception as exc:  # litellm maps providers to many types; sorted by _retryable
                with self._lock:
                    self.failed_attempts += 1
                reason = f"{type(exc).__name__}: {one_line(exc, 200)}"
                if not _retryable(exc):
                    break
                if attempt < self.retries:
                    self.stop.wait(self.retry_wait_s * 2**attempt)  # an outage elsewhere wakes it early
                continue
            reply = str(resp.choices[0].message.content or "").strip()
            usage = getattr(resp, "usage", None)
            prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
            return reply, prompt_tokens, completion_tokens
        raise TeacherUnavailable(f"teacher model `{model}` failed {tries} time(s), last: {reason}")
