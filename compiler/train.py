"""python -m compiler.train --train DATA/train.jsonl --eval DATA/eval.jsonl --out RUN [--set train.max_steps=300]

Full-parameter supervised fine-tune with TRL's SFTTrainer, in the base model's own chat template: loss
on assistant turns only, from a mask computed by rendering (``compiler.templates``; no ``{% generation %}``
markers needed), best checkpoint by held-out loss. Hyperparameters follow the base (``hyperparameters``):
scratch models a high rate, pretrained ones a fine-tuning rate, checkpointing and bf16 on GPU.

Under ``accelerate launch`` (FSDP, DeepSpeed ZeRO-3; see docs/compile.md) every rank trains; the main
process alone writes the run folder's files, and the model is created after the training config so
ZeRO-3 / FSDP low-memory init applies.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .base_model import check_base_model
from .config import TrainConfig, load_compile_config
from .copying import find_copied, write_copied


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
    learning_rate: float = 0.0
    gradient_checkpointing: bool = False
    end_of_turn: str = ""
    world_size: int = 1


# `train.learning_rate: None` (the default) takes the base's rate. A scratch model of ~1M parameters trains
# at 5e-3; full fine-tuning of a pretrained 0.5-7B instruct model at 1e-5, the usual peak (TRL's SFT
# default is 2e-5): the scratch rate would wreck its weights in a few steps.
SCRATCH_LEARNING_RATE = 5e-3
FINETUNE_LEARNING_RATE = 1e-5


@dataclass(frozen=True)
class Hyperparameters:
    """What training runs with, after the per-base defaults were applied."""

    learning_rate: float
    gradient_checkpointing: bool
    bf16: bool


def hyperparameters(cfg: TrainConfig, cuda: bool, bf16_ok: bool = True, fsdp: bool = False) -> Hyperparameters:
    """Per-base defaults: with no ``learning_rate`` set, scratch trains at ``SCRATCH_LEARNING_RATE`` without
    checkpointing (tiny models, fast steps), a pretrained base at ``FINETUNE_LEARNING_RATE`` (a rate set is
    used as it is, whatever the base); on GPU bf16, plus gradient checkpointing for a pretrained base
    (FSDP checkpoints through its own config instead).

        hyperparameters(TrainConfig(base_model="/models/qwen"), cuda=True)
        # Hyperparameters(learning_rate=1e-05, gradient_checkpointing=True, bf16=True)
    """
    from .base_model import is_scratch

    scratch = is_scratch(cfg.base_model)
    lr = cfg.learning_rate
    if lr is None:
        lr = SCRATCH_LEARNING_RATE if scratch else FINETUNE_LEARNING_RATE
    bf16 = (cuda and bf16_ok) if cfg.bf16 is None else bool(cfg.bf16)
    return Hyperparameters(learning_rate=lr, gradient_checkpointing=cuda and not scratch and not fsdp, bf16=bf16)


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


def tokenize_rows(tokenizer: Any, rows: Sequence[Mapping[str, Any]], eot: str, label: str) -> dict[str, list[Any]]:
    """Pre-tokenized ``input_ids`` + ``assistant_masks`` for TRL, each mask checked (``check_mask``)."""
    from .templates import chat_messages, check_mask, tokenize_conversation

    eot_id = tokenizer.convert_tokens_to_ids(eot)
    ids_col, mask_col = [], []
    for n, row in enumerate(rows):
        messages, tools = chat_messages(row)
        ids, mask = tokenize_conversation(tokenizer, messages, tools, eot)
        check_mask(ids, mask, eot_id, f"{label} conversation {n}")
        ids_col.append(ids)
        mask_col.append(mask)
    return {"input_ids": ids_col, "assistant_masks": mask_col}


def greedy_generation_config(model: Any, tokenizer: Any, eot: str) -> Any:
    """What the artifact's ``generation_config.json`` says: stop on the template's end of turn (and the
    tokenizer's eos), decode greedily. The base's sampling defaults (Qwen instruct: temperature 0.7,
    repetition penalty 1.05) are dropped on purpose: vLLM would apply them, and the gate measured greedy.
    """
    from transformers import GenerationConfig

    eos = [tokenizer.convert_tokens_to_ids(eot)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    return GenerationConfig(
        bos_token_id=getattr(model.config, "bos_token_id", None),
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


def model_positions(spec: str, default: int) -> int:
    """The base's context length, read before the model exists (ZeRO-3 / FSDP create it afterwards)."""
    from .base_model import _source, is_scratch

    if is_scratch(spec):
        from .scratch import parse_spec

        return parse_spec(spec).max_positions
    from transformers import AutoConfig

    return int(getattr(AutoConfig.from_pretrained(_source(spec)), "max_position_embeddings", default) or default)


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


def last_complete_checkpoint(ckpt_dir: Path, remove_partial: bool = True) -> str | None:
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
        if remove_partial:
            shutil.rmtree(d, ignore_errors=True)
    return None


def data_fingerprint(rows: Sequence[Mapping[str, Any]], cfg: TrainConfig) -> str:
    """What a checkpoint depends on: the training data and the settings that shape the model and tokenizer."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
    h.update(json.dumps([cfg.base_model, cfg.vocab_size, cfg.seed, cfg.max_length, cfg.split_digits]).encode())
    return h.hexdigest()


def _make_callback(run_dir: Path, max_steps: int, echo: Callable[[str], None], on_log: list[dict[str, float]],
                   write: bool = True) -> Any:
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
            if write:
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
            if write:
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
            if write:
                write_json_atomic(run_dir / "progress.json", self._snapshot(state, "finished"))

    return ProgressCallback()


def train(
    train_rows: Sequence[Mapping[str, Any]],
    eval_rows: Sequence[Mapping[str, Any]],
    run_dir: str | Path,
    cfg: TrainConfig | None = None,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Fine-tune ``cfg.base_model`` on ``train_rows``; best-by-held-out-loss weights land in ``RUN/model``.

    Every rank of a distributed launch calls this; only the main process writes the run folder's files.
    """
    cfg = cfg or TrainConfig()
    check_base_model(cfg.base_model, lora=cfg.lora)
    if not train_rows:
        raise TrainError("no training conversations; render the flowchart's paths first.")
    if not eval_rows:
        raise TrainError("no held-out conversations; best-checkpoint selection needs a held-out set (eval_share > 0).")

    import datasets
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig, SFTTrainer

    from .base_model import load_model, load_tokenizer
    from .budget import apply_budget, early_stop_callbacks
    from .templates import end_of_turn
    from .toolcalls import tool_format_of

    # our progress line replaces the per-step dict printing and the progress bars
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(run_dir)
    ckpt_dir = run / "checkpoints"
    tok_dir = run / "tokenizer"
    cuda = torch.cuda.is_available()
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    hp = hyperparameters(cfg, cuda, cuda and torch.cuda.is_bf16_supported(), fsdp)
    steps_per_epoch = max(1, math.ceil(len(train_rows) / (cfg.batch_size * cfg.grad_accum)))
    max_steps = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * steps_per_epoch))
    eval_steps = max(1, min(cfg.eval_steps, max_steps))

    # the training config first: under `accelerate launch` it sets up the process group and, for ZeRO-3,
    # the config `from_pretrained` reads to create the model sharded (zero.Init) instead of whole per rank
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=hp.learning_rate,
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
        # the dataset is pre-tokenized with our own assistant mask (TRL's needs `{% generation %}` markers)
        assistant_only_loss=False,
        max_length=min(cfg.max_length, model_positions(cfg.base_model, cfg.max_length)),
        bf16=hp.bf16,
        report_to=[],
        disable_tqdm=True,
        seed=cfg.seed,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not cuda,
        # scratch sizes: memory is no issue and checkpointing costs ~30% time; pretrained bases on GPU need it
        activation_checkpointing=hp.gradient_checkpointing,
        # paths differ a lot in length (280-800 tokens on travel-booking): batching alike lengths cuts the
        # padding the CPU would otherwise compute by about a quarter
        train_sampling_strategy="group_by_length",
    )
    state = PartialState()
    main = state.is_main_process
    say = echo if main else (lambda _line: None)
    if cfg.learning_rate is None and hp.learning_rate != SCRATCH_LEARNING_RATE:
        say(f"`{cfg.base_model}` is pretrained and fine-tunes at {hp.learning_rate:g}, its default "
            "(set train.learning_rate to choose another)")

    fingerprint = data_fingerprint(train_rows, cfg)
    fp_file = run / "fingerprint.json"
    if main:
        last = last_complete_checkpoint(ckpt_dir) if cfg.resume else None
        same = fp_file.is_file() and json.loads(fp_file.read_text()).get("sha") == fingerprint
        if last is not None and not same:
            # checkpoints of other data or another base model: resuming would silently mix two runs
            say(f"not resuming: checkpoints in {ckpt_dir} were made from other data or settings; starting over")
            shutil.rmtree(ckpt_dir)
            last = None
        write_json_atomic(fp_file, {"sha": fingerprint})
        if last is None or not tok_dir.is_dir():
            # the tokenizer (a scratch one is trained here) is fixed at the first start and read back by every
            # rank, so what trains is exactly what the artifact keeps, chat template included
            load_tokenizer(cfg.base_model, train_rows, cfg.vocab_size, cfg.split_digits).save_pretrained(str(tok_dir))
    state.wait_for_everyone()
    last = last_complete_checkpoint(ckpt_dir, remove_partial=False) if cfg.resume else None
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    if not tokenizer.chat_template:
        raise TrainError(f"the tokenizer saved in `{tok_dir}` lost its chat template; delete the run folder.")
    eot = end_of_turn(tokenizer)
    if any(m.get("tool_calls") for r in train_rows for m in r.get("messages") or []) and \
            tool_format_of(tokenizer.chat_template) is None:
        raise TrainError(
            f"the chat template of `{cfg.base_model}` renders no Hermes `<tool_call>` blocks, and the workflow "
            "calls tools; give the base a template that renders tool calls as "
            '`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (as Qwen\'s do).'
        )

    train_ds = Dataset.from_dict(tokenize_rows(tokenizer, train_rows, eot, "training"))
    eval_ds = Dataset.from_dict(tokenize_rows(tokenizer, eval_rows, eot, "held-out"))
    # train.max_tokens counts what all ranks read: a step of N ranks reads N per-device batches
    budget_cfg = replace(cfg, batch_size=cfg.batch_size * state.num_processes)
    max_steps = apply_budget(budget_cfg, args, [len(ids) for ids in train_ds["input_ids"]], max_steps)
    if last is not None:
        from transformers import AutoModelForCausalLM

        say(f"resuming from {last}")
        model = AutoModelForCausalLM.from_pretrained(last)
    else:
        model = load_model(cfg.base_model, tokenizer, seed=cfg.seed)
    model.generation_config = greedy_generation_config(model, tokenizer, eot)
    # ZeRO-3 leaves a placeholder of size 0 per rank; `ds_numel` is the real size
    nparams = sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())

    losses: list[dict[str, float]] = []
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=[_make_callback(run, max_steps, say, losses, write=main), *early_stop_callbacks(cfg, say)],
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
    tstate = trainer.state
    tokens = int(tstate.num_input_tokens_seen or 0)

    model_dir = run / "model"
    trainer.save_model(str(model_dir))  # every rank: FSDP / ZeRO-3 gather the full weights for the main one
    result = TrainResult(
        model_dir=str(model_dir),
        best_checkpoint=tstate.best_model_checkpoint,
        steps=tstate.global_step,
        train_tokens=tokens,
        tokens_per_s=round((tokens - tokens0) / wall, 1) if wall > 0 else 0.0,
        wall_s=round(wall, 2),
        parameters=nparams,
        resumed_from=last,
        best_eval_loss=tstate.best_metric,
        losses=losses,
        device="cuda" if cuda else "cpu",
        bf16=hp.bf16,
        learning_rate=hp.learning_rate,
        gradient_checkpointing=hp.gradient_checkpointing,
        end_of_turn=eot,
        world_size=state.num_processes,
    )
    if main:
        tokenizer.save_pretrained(str(model_dir))
        model.generation_config.save_pretrained(str(model_dir))
        if cfg.copy_arguments:
            write_copied(model_dir, find_copied(train_rows))
        write_json_atomic(
            model_dir / "train_meta.json",
            {"result": asdict(result), "config": asdict(cfg), "train_rows": len(train_rows),
             "eval_rows": len(eval_rows)},
        )
    state.wait_for_everyone()
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
