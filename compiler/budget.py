"""Training budgets by tokens, early stopping on held-out loss, and a time estimate before training starts.

A step budget means a different amount of learning for every data set and tokenizer, and its wall time
varies with the machine (CPU speed on the same box moves by 4x between days). A token budget is what
the model actually reads, so ``train.max_tokens`` turns into steps once the training set is tokenized::

    steps = steps_for_tokens(400_000, lengths=[244, 310, 198], batch_size=8)       # 1,599 -> 53 steps
    estimate_seconds(400_000, measure_tokens_per_s("scratch:tiny", vocab_size=1024))

``train.stop_eval_loss`` stops the run as soon as the held-out loss shows the gate will pass (the
held-out loss of a scratch model falls by an order of magnitude when it starts copying slot values,
docs/bench-compile.md), so a quick machine or an easy workflow does not pay for the whole budget. It takes
two checks in a row at or below the bar (``STOP_AFTER_CHECKS``: a single one can be a dip), with every held-out
turn's first token, the one that picks the node, the likeliest (``STOP_MIN_TURN_PROB``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any


def tokens_per_step(lengths: Sequence[int], batch_size: int, grad_accum: int = 1) -> float:
    """Mean non-padding tokens one optimizer step reads (what `tokens/s` counts)."""
    if not lengths:
        return 0.0
    return sum(lengths) / len(lengths) * max(1, batch_size) * max(1, grad_accum)


def steps_for_tokens(max_tokens: int, lengths: Sequence[int], batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps that read about ``max_tokens`` tokens of this training set (at least one)."""
    per_step = tokens_per_step(lengths, batch_size, grad_accum)
    if per_step <= 0:
        return 1
    return max(1, math.ceil(max_tokens / per_step))


def apply_budget(cfg: Any, args: Any, lengths: Sequence[int], max_steps: int) -> int:
    """Steps to train: ``cfg.max_tokens`` turned into steps when it is set, else ``max_steps`` unchanged.

    ``args`` (the trainer's config, created before the data is tokenized) is updated in place: steps,
    warm-up and, when the budget leaves fewer steps than ``eval_steps``, the eval/save interval.
    """
    if not getattr(cfg, "max_tokens", 0):
        return max_steps
    steps = steps_for_tokens(int(cfg.max_tokens), lengths, cfg.batch_size, cfg.grad_accum)
    args.max_steps = steps
    args.warmup_steps = int(cfg.warmup_ratio * steps)
    interval = max(1, min(int(cfg.eval_steps), steps))
    args.eval_steps = interval
    args.save_steps = interval
    return steps


STOP_AFTER_CHECKS = 2  # consecutive held-out checks that pass before stopping
STOP_MIN_TURN_PROB = 0.5  # and at each, every held-out assistant turn's first token at least this likely


def early_stop_callbacks(cfg: Any, echo: Any = print, checks: int | None = None,
                         min_turn_prob: float | None = None) -> list[Any]:
    """A trainer callback that stops once ``checks`` (``STOP_AFTER_CHECKS``) held-out checks in a row pass;
    none when ``cfg.stop_eval_loss`` is unset. A check passes when the held-out loss is at or below
    ``cfg.stop_eval_loss`` and the model gives the first token of every held-out assistant turn a
    probability of at least ``min_turn_prob`` (``STOP_MIN_TURN_PROB``, 0 for none; see
    ``weakest_turn_start``). That second test runs in one process only: under ``accelerate launch``
    each rank holds its own share of the held-out set, so the loss alone decides and every rank
    stops at the same step.

    Why both. The held-out loss is an average over ~1,500 assistant tokens, most of them copies; a
    turn that goes to the wrong node costs one token, so a run can be under 0.01 with a held-out
    decision still wrong (travel-booking seed 3: loss 0.0086, the handover reply after "Transfer me
    to a person" at probability 0.19; the gate failed that path 8 times in 8). The first token of a
    turn is what picks the node (a reply's first word, or a tool call), and at probability 0.5 or
    more greedy decoding picks the right one. Two checks in a row: one can be a dip
    (docs/bench-compile.md). The best checkpoint (lowest held-out loss) is still the model.
    """
    setting = getattr(cfg, "stop_eval_loss", None)
    if setting is None:
        return []
    threshold = float(setting)
    need = max(1, int(STOP_AFTER_CHECKS if checks is None else checks))
    turn_bar = STOP_MIN_TURN_PROB if min_turn_prob is None else float(min_turn_prob)
    from transformers import TrainerCallback

    class StopAtEvalLoss(TrainerCallback):  # type: ignore[misc]
        """Stops after the evaluation that makes ``need`` passing checks in a row; its checkpoint is still saved
        (the trainer saves after the evaluation of the same step)."""

        def __init__(self) -> None:
            self.streak = 0  # a resumed run starts counting again: at most one check more

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                        **kw: Any) -> None:
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            ok = loss <= threshold
            weakest = None
            if ok and turn_bar > 0 and getattr(args, "world_size", 1) == 1 and kw.get("model") is not None \
                    and kw.get("eval_dataloader") is not None:
                weakest = weakest_turn_start(kw["model"], kw["eval_dataloader"])
                if weakest < turn_bar:
                    ok = False
                    echo(f"held-out loss {loss:.4f} <= train.stop_eval_loss {threshold}, but a held-out turn starts "
                         f"at probability {weakest:.2f} < {turn_bar}: training on")
            self.streak = self.streak + 1 if ok else 0
            if self.streak >= need and state.global_step < state.max_steps:
                row = f"{need} checks in a row" if need > 1 else "a check"
                turns = f", every held-out turn's first token >= {turn_bar}" if weakest is not None else ""
                echo(f"held-out loss {loss:.4f} <= train.stop_eval_loss {threshold}{turns} ({row}): stopping early "
                     f"at step {state.global_step} of {state.max_steps}")
                control.should_training_stop = True

    return [StopAtEvalLoss()]


def weakest_turn_start(model: Any, batches: Any) -> float:
    """The lowest probability ``model`` gives the first token of an assistant turn, over ``batches`` (the trainer's
    held-out batches: ``labels`` are -100 outside assistant turns, so a turn starts where a label follows a -100)."""
    import torch

    worst = 1.0
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                labels = batch["labels"]
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                logits = model(**inputs).logits[:, :-1].float()
                target, before = labels[:, 1:], labels[:, :-1]
                starts = (target != -100) & (before == -100)
                if not bool(starts.any()):
                    continue
                logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                worst = min(worst, float(logp[starts].exp().min()))
    finally:
        model.train(training)
    return worst


def measure_tokens_per_s(base_model: str = "scratch:tiny", vocab_size: int = 1024, seq_len: int = 256,
                         batch_size: int = 8, steps: int = 2, threads: int | None = None) -> float:
    """Training tokens/s of a scratch model on this machine now, from a few forward-backward passes.

    Takes a few seconds; it is what the demo's "expected to take" line is computed from, before the real
    run starts (the first steps of a real run include tokenizer training and data preparation). Measure
    with the thread count the run will use: on shared cores two threads can be ten times slower than one.
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(base_model, vocab_size, seq_len, batch_size, steps)
    finally:
        torch.set_num_threads(before)


def _measure(base_model: str, vocab_size: int, seq_len: int, batch_size: int, steps: int) -> float:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .scratch import parse_spec

    size = parse_spec(base_model)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=size.hidden, intermediate_size=size.intermediate,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.heads, max_position_embeddings=max(seq_len, 8),
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len))

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up: allocations and kernel selection
    t0 = time.monotonic()
    for _ in range(max(1, steps)):
        step()
    elapsed = time.monotonic() - t0
    return batch_size * seq_len * max(1, steps) / elapsed if elapsed > 0 else 0.0


def estimate_seconds(max_tokens: int, tokens_per_s: float) -> float | None:
    """Seconds a token budget takes at a measured speed (None when the speed is unknown)."""
    return max_tokens / tokens_per_s if tokens_per_s > 0 else None
