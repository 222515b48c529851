"""python -m compiler.train --train DATA/train.jsonl --eval DATA/eval.jsonl --out RUN [--set train.max_steps=300]

Full-parameter supervised fine-tune with TRL's SFTTrainer: loss on assistant turns only (the
template's ``{% generation %}`` blocks), best checkpoint by held-out loss, bf16 when CUDA is there.
Progress (step, loss, tokens/s, ETA) goes to the console and to ``RUN/progress.json``, rewritten
atomically so another process (the gateway's job view) can poll it. A rerun on the same ``RUN``
resumes from the last checkpoint, tokenizer included, so a crashed job loses at most ``eval_steps``.

Layout of ``RUN``: ``tokenizer/`` (fixed at the first start), ``checkpoints/checkpoint-N/``,
``model/`` (best weights + tokenizer) with ``model/train_meta.json``, and ``progress.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .base_model import check_base_model, load_base
from .config import TrainConfig, load_compile_config


class TrainError(RuntimeError):
    """Training could not run; the message says why and what to change."""


@dataclass
class TrainResult:
    """What a training run produced, as plain data for the pipeline's metadata and the bench."""

    model_dir: str
    best_checkpoint: str | None
    steps: int
    train_tokens: int
    tokens_per_s: float
    wall_s: float
    parameters: int
    resumed_from: str | None
    best_eval_loss: float | None
    losses: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"
    bf16: bool = False


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Readers polling the file never see half a write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """The latest progress snapshot of a run, or None before it starts."""
    path = Path(run_dir) / "progress.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One conversation with a fixed message shape, so Arrow infers one schema for the whole set.

    Tools are stored as a JSON string (TRL parses it back) because tool schemas differ in shape.
    """
    messages = []
    for m in row["messages"]:
        calls = None
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                args = c["function"].get("arguments", "")
                calls.append(
                    {
                        "id": str(c.get("id", "")),
                        "type": "function",
                        "function": {
                            "name": c["function"]["name"],
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                )
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        messages.append(
            {
                "role": m["role"],
                "content": content,
                "tool_calls": calls,
                "tool_call_id": m.get("tool_call_id"),
            }
        )
    return {"messages": messages, "tools": json.dumps(row.get("tools") or [])}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"dataset `{p}` does not exist; run `python -m compiler.pipeline` or pass a JSONL file.")
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise TrainError(f"`{p}` line {n} is not JSON ({exc}); one conversation per line.") from None
    return rows


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that was fully written; a kill during a save leaves a partial one behind.

    transformers' ``get_last_checkpoint`` takes the highest-numbered folder even when it holds no
    ``trainer_state.json`` yet, and resuming from it fails, so partial folders are removed here.
    """
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.glob("checkpoint-*"):
        tail = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and tail.isdigit():
            found.append((int(tail), d))
    for _, d in sorted(found, reverse=True):
        if (d / "trainer_state.json").is_file() and any(d.glob("*.safetensors")):
            return str(d)
        shutil.rmtree(d, ignore_errors=True)
    return None


def data_fingerprint(rows: Sequence[Mapping[str, Any]], cfg: TrainConfig) -> str:
    """What a checkpoint depends on: the training data and the settings that shape the model and tokenizer."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    h.update(json.dumps([cfg.base_model, cfg.vocab_size, cfg.seed, cfg.max_length]).encode())
    return h.hexdigest()


def _make_callback(run_dir: Path, max_steps: int, echo: Callable[[str], None], on_log: list[dict[str, float]]) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):  # type: ignore[misc]
        """Console line + progress.json on every log; ETA from this session's pace (resume-safe)."""

        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.step0: int | None = None
            self.tok0 = 0
            self.last_loss: float | None = None
            self.last_eval: float | None = None

        def _snapshot(self, state: Any, status: str) -> dict[str, Any]:
            if self.step0 is None:
                self.step0 = state.global_step
                self.tok0 = int(state.num_input_tokens_seen or 0)
            elapsed = time.monotonic() - self.t0
            steps_done = state.global_step - self.step0
            tokens = int(state.num_input_tokens_seen or 0) - self.tok0
            rate = steps_done / elapsed if elapsed > 0 else 0.0
            eta = (max_steps - state.global_step) / rate if rate > 0 else None
            return {
                "status": status,
                "step": state.global_step,
                "max_steps": max_steps,
                "loss": self.last_loss,
                "eval_loss": self.last_eval,
                "best_eval_loss": state.best_metric,
                "tokens_seen": int(state.num_input_tokens_seen or 0),
                "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else 0.0,
                "elapsed_s": round(elapsed, 1),
                "eta_s": round(eta, 1) if eta is not None else None,
                "updated": time.time(),
                "pid": os.getpid(),
            }

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.monotonic()
            self.step0 = state.global_step
            self.tok0 = int(state.num_input_tokens_seen or 0)
            write_json_atomic(run_dir / "progress.json", self._snapshot(state, "running"))

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                self.last_loss = float(logs["loss"])
            if "eval_loss" in logs:
                self.last_eval = float(logs["eval_loss"])
            snap = self._snapshot(state, "running")
            if "loss" in logs or "eval_loss" in logs:
                on_log.append({k: float(v) for k, v in logs.items() if isinstance(v, int | float)} | {
                    "step": float(state.global_step)})
            write_json_atomic(run_dir / "progress.json", snap)
            eta = f"{snap['eta_s']:.0f}s" if snap["eta_s"] is not None else "?"
            parts = [f"step {state.global_step}/{max_steps}"]
            if "loss" in logs:
                parts.append(f"loss {logs['loss']:.4f}")
            if "eval_loss" in logs:
                parts.append(f"eval_loss {logs['eval_loss']:.4f}")
            parts += [f"{snap['tokens_per_s']:.0f} tok/s", f"ETA {eta}"]
            echo("  ".join(parts))

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            write_json_atomic(run_dir / "progress.json", self._snapshot(state, "finished"))

    return ProgressCallback()


def train(
    train_rows: Sequence[Mapping[str, Any]],
    eval_rows: Sequence[Mapping[str, Any]],
    run_dir: str | Path,
    cfg: TrainConfig | None = None,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Fine-tune ``cfg.base_model`` on ``train_rows``; best-by-held-out-loss weights land in ``RUN/model``."""
    cfg = cfg or TrainConfig()
    check_base_model(cfg.base_model, lora=cfg.lora)
    if not train_rows:
        raise TrainError("no training conversations; render the flowchart's paths first.")
    if not eval_rows:
        raise TrainError("no held-out conversations; best-checkpoint selection needs a held-out set (eval_share > 0).")

    import datasets
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    # our progress line replaces the per-step dict printing and the progress bars
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(run_dir)
    ckpt_dir = run / "checkpoints"
    tok_dir = run / "tokenizer"
    fingerprint = data_fingerprint(train_rows, cfg)
    fp_file = run / "fingerprint.json"
    last = last_complete_checkpoint(ckpt_dir) if cfg.resume else None
    if last is not None and (not fp_file.is_file() or json.loads(fp_file.read_text()).get("sha") != fingerprint):
        # checkpoints of other data or another base model: resuming would silently mix two runs
        echo(f"not resuming: checkpoints in {ckpt_dir} were made from other data or settings; starting over")
        shutil.rmtree(ckpt_dir)
        last = None
    write_json_atomic(fp_file, {"sha": fingerprint})

    if last is not None and tok_dir.is_dir():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        echo(f"resuming from {last}")
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        model = AutoModelForCausalLM.from_pretrained(last)
    else:
        last = None
        model, tokenizer = load_base(
            cfg.base_model, conversations=train_rows, vocab_size=cfg.vocab_size, lora=cfg.lora, seed=cfg.seed
        )
        tokenizer.save_pretrained(str(tok_dir))

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported() if cfg.bf16 is None else bool(cfg.bf16)
    train_ds = Dataset.from_list([normalise_row(r) for r in train_rows])
    eval_ds = Dataset.from_list([normalise_row(r) for r in eval_rows])
    steps_per_epoch = max(1, math.ceil(len(train_ds) / (cfg.batch_size * cfg.grad_accum)))
    max_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * steps_per_epoch))
    eval_steps = max(1, min(cfg.eval_steps, max_steps))

    args = SFTConfig(
        output_dir=str(ckpt_dir),
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(cfg.warmup_ratio * max_steps),
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        assistant_only_loss=True,
        max_length=min(cfg.max_length, int(getattr(model.config, "max_position_embeddings", cfg.max_length))),
        bf16=bf16,
        report_to=[],
        disable_tqdm=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not cuda,
        # TRL turns checkpointing on by default; at these sizes memory is no issue and it costs ~30% time
        activation_checkpointing=False,
        # paths differ a lot in length (280-800 tokens on travel-booking): batching alike lengths cuts the
        # padding the CPU would otherwise compute by about a quarter
        train_sampling_strategy="group_by_length",
    )
    losses: list[dict[str, float]] = []
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=[_make_callback(run, max_steps, echo, losses)],
    )
    trainer.remove_callback(PrinterCallback)
    t0 = time.monotonic()
    tokens0 = 0
    if last is not None:
        state_file = Path(last) / "trainer_state.json"
        if state_file.is_file():
            tokens0 = int(json.loads(state_file.read_text()).get("num_input_tokens_seen", 0) or 0)
    trainer.train(resume_from_checkpoint=last)
    wall = time.monotonic() - t0
    state = trainer.state
    tokens = int(state.num_input_tokens_seen or 0)

    model_dir = run / "model"
    trainer.save_model(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    trained: Any = trainer.model
    nparams = sum(int(p.numel()) for p in trained.parameters())
    result = TrainResult(
        model_dir=str(model_dir),
        best_checkpoint=state.best_model_checkpoint,
        steps=state.global_step,
        train_tokens=tokens,
        tokens_per_s=round((tokens - tokens0) / wall, 1) if wall > 0 else 0.0,
        wall_s=round(wall, 2),
        parameters=nparams,
        resumed_from=last,
        best_eval_loss=state.best_metric,
        losses=losses,
        device="cuda" if cuda else "cpu",
        bf16=bf16,
    )
    write_json_atomic(
        model_dir / "train_meta.json",
        {"result": asdict(result), "config": asdict(cfg), "train_rows": len(train_rows), "eval_rows": len(eval_rows)},
    )
    return result


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m compiler.train", description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="training conversations (JSONL, OpenAI chat format)")
    parser.add_argument("--eval", required=True, help="held-out conversations for best-checkpoint selection")
    parser.add_argument("--out", required=True, help="run folder (resumed if it holds checkpoints)")
    parser.add_argument("--config", default=None, help="compile YAML (configs/compile.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.max_steps=50")
    return parser


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"override `{item}` is not KEY=VALUE; write e.g. `train.max_steps=50`.")
        out[key.strip()] = value.strip()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        cfg = load_compile_config(args.config, parse_sets(args.set))
        result = train(read_jsonl(args.train), read_jsonl(args.eval), args.out, cfg.train)
    except (TrainError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(result) | {"losses": len(result.losses)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
