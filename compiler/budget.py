"""Training budgets by tokens, early stopping on held-out loss, and a time estimate before training starts.

A step budget means a different amount of learning for every data set and tokenizer, and its wall time
varies with the machine (CPU speed on the same box moves by 4x between days). A token budget is what
the model actually reads, so ``train.max_tokens`` turns into steps once the training set is tokenized::

    steps = steps_for_tokens(400_000, lengths=[244, 310, 198], batch_size=8)       # 1,599 -> 53 steps
    estimate_seconds(400_000, measure_tokens_per_s("scratch:tiny", vocab_size=1024))

``train.stop_eval_loss`` stops the run as soon as the held-out loss shows the gate will pass (the
held-out loss of a scratch model falls by an order of magnitude when it starts copying slot values,
docs/bench-compile.md), so a quick machine or an easy workflow does not pay for the whole budget. It takes
two checks in a row at or below the bar (``STOP_AFTER_CHECKS``): a single one can be a dip.
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


STOP_AFTER_CHECKS = 2  # consecutive held-out checks at or below `train.stop_eval_loss` before stopping


def early_stop_callbacks(cfg: Any, echo: Any = print, checks: int = STOP_AFTER_CHECKS) -> list[Any]:
    """A trainer callback that stops once ``checks`` held-out checks in a row are at or below
    ``cfg.stop_eval_loss``; none when it is unset.

    One check under the bar can be a dip: travel-booking runs that stopped at the first one passed the gate
    at or near its bar (docs/bench-compile.md), so the loss must stay under it at the next check too
    (``eval_steps`` later, a few percent of the budget). The best checkpoint is still what is kept.
    """
    setting = getattr(cfg, "stop_eval_loss", None)
    if setting is None:
        return []
    threshold = float(setting)
    need = max(1, int(checks))
    from transformers import TrainerCallback

    class StopAtEvalLoss(TrainerCallback):  # type: ignore[misc]
        """Stops after the evaluation that makes ``need`` in a row at or below the threshold; its checkpoint is
        still saved (the trainer saves after the evaluation of the same step), and the best checkpoint is the
        model (``load_best_model_at_end``)."""

        def __init__(self) -> None:
            self.streak = 0  # a resumed run starts counting again: at most one check more

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                        **kw: Any) -> None:
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            self.streak = self.streak + 1 if loss <= threshold else 0
            if self.streak >= need and state.global_step < state.max_steps:
                row = f"{need} checks in a row" if need > 1 else "a check"
                echo(f"held-out loss {loss:.4f} <= train.stop_eval_loss {threshold} ({row}): stopping early at "
                     f"step {state.global_step} of {state.max_steps}")
                control.should_training_stop = True

    return [StopAtEvalLoss()]


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
