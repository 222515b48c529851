"""Settings for each compile stage: one dataclass per stage, field help is the only documentation.

Precedence is defaults < file < command line::

    cfg = load_compile_config("configs/compile.yaml", overrides={"train.max_steps": 50})
    cfg.train.learning_rate

The config's hash (``config_hash``) is stored with every artifact so a number traces to its settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A compile config file or override is wrong; the message names the key and how to fix it."""


@dataclass
class DataConfig:
    max_loops: int = field(default=2, metadata={"help": (
        "Times a loop is unrolled when enumerating paths. Two keeps a small model on the chart after a "
        "loop it took more than once (held-out compositions)."
    )})
    path_budget: int | None = field(
        default=400, metadata={"help": "Most paths kept; past it paths are sampled so every edge stays covered."}
    )
    eval_share: float = field(default=0.2, metadata={"help": "Share of paths held out for the eval gate."})
    variants_per_path: int = field(
        default=40, metadata={"help": "Conversations rendered per training path (different slots / utterances)."}
    )
    novel_slot_share: float = field(default=0.0, metadata={"help": (
        "Share of slot values in offline training conversations replaced by unlisted values of the same "
        "shape, so the model learns to copy what the user says rather than one mapping per listed value. "
        "Held-out conversations keep the listed values."
    )})
    eval_variants_per_path: int = field(default=8, metadata={"help": "Conversations rendered per held-out path."})
    max_eval_conversations: int = field(
        default=40, metadata={"help": "Cap on held-out conversations driven by the simulator (CPU time)."}
    )
    max_train_conversations: int = field(
        default=2000, metadata={"help": "Cap on training conversations (sampled evenly over paths)."}
    )
    traffic: str | None = field(
        default=None, metadata={"help": "JSONL of logged conversations (OpenAI chat format) to add to training."}
    )
    value_variants: int = field(default=0, metadata={"help": (
        "Compile from traffic: copies of each captured training conversation with its slot values swapped "
        "(new digits in the same shape, or another value of the slot seen in the traffic; "
        "compiler/variants.py). They stop a model memorising each conversation's values, but a value with "
        "new digits can only be copied token by token, which the CPU scratch model does not learn within "
        "its budget: travel-booking's traffic compile passes with 0 and fails with 4 on this CPU "
        "(docs/bench-traffic-compile.md; measured before `train.copy_arguments`). With copied arguments "
        "decoded as copies, 2 lifted the acme app's simulator gate (0.912 / 0.771 -> 0.964 / 0.886) and "
        "4 passes it (0.990 / 0.971, replay 0.998)."
    )})
    thin_conversations: int = field(default=3, metadata={"help": (
        "Compile from traffic: a mined path fewer captured conversations walk is topped up to this many with "
        "conversations rendered offline from the mined chart (real utterances and replies). 0 renders none."
    )})
    render_unwalked: bool = field(default=True, metadata={"help": (
        "Compile from traffic: also render mined paths no captured conversation walks (loops taken more "
        "often, branches in new orders): the simulator gate drives such compositions, and travel-booking's "
        "traffic compile passes it only with them (docs/bench-traffic-compile.md). Turn it off for an app "
        "that decides on something said turns earlier (an intent before an order lookup): its mined chart "
        "accepts paths mixing branches the app never mixes."
    )})
    teacher_model: str | None = field(
        default=None, metadata={"help": "litellm model that renders conversations; None renders offline."}
    )
    simulator_model: str | None = field(
        default=None, metadata={"help": "litellm model playing the user in teacher mode."}
    )
    teacher_api_base: str | None = field(default=None, metadata={"help": (
        "Base URL of an OpenAI-compatible server for the teacher and simulator (`openai/<model>` models)."
    )})
    teacher_api_key_env: str | None = field(
        default=None, metadata={"help": "Environment variable holding the teacher's API key (else litellm's own)."}
    )
    teacher_concurrency: int = field(
        default=8, metadata={"help": "Teacher conversations rendered at once (each one's turns stay in order)."}
    )
    max_teacher_usd: float | None = field(default=None, metadata={"help": (
        "Teacher budget in USD: refuse to start when the estimate exceeds it, stop (keeping what is rendered "
        "and cached) when spending reaches it. None: no limit."
    )})
    teacher_usd_per_mtok_in: float | None = field(
        default=None, metadata={"help": "Teacher price per million prompt tokens; None: litellm's price map."}
    )
    teacher_usd_per_mtok_out: float | None = field(
        default=None, metadata={"help": "Teacher price per million completion tokens; None: litellm's price map."}
    )
    teacher_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of teacher calls."})
    teacher_regenerations: int = field(default=2, metadata={"help": (
        "Times an off-node teacher reply is asked again before its conversation is dropped (counted in meta)."
    )})
    teacher_retries: int = field(
        default=3, metadata={"help": "Retries of a failing teacher call (backoff) before the outage stops the run."}
    )
    teacher_retry_wait_s: float = field(default=2.0, metadata={"help": "First retry wait; it doubles each time."})
    teacher_timeout_s: float = field(default=120.0, metadata={"help": "Seconds one teacher call may take."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, splitting and rendering."})


@dataclass
class TrainConfig:
    base_model: str = field(
        default="scratch:tiny", metadata={"help": "`scratch:<size>`, a local HF folder or a hub id."}
    )
    lora: bool = field(default=False, metadata={"help": "Refused for compile: procedural knowledge is not low-rank."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps (overrides epochs when > 0)."})
    max_tokens: int = field(default=0, metadata={"help": (
        "Training budget in tokens (non-padding, as tokens/s counts them); when > 0 it replaces `max_steps`: "
        "steps = budget / tokens per step of the tokenized training set. A budget in tokens means the same "
        "learning whatever the tokenizer and batch, and a wall time that is budget / tokens/s. A `max_steps` "
        "given on the command line (without `max_tokens`) turns the budget off."
    )})
    stop_eval_loss: float | None = field(default=None, metadata={"help": (
        "Stop early once the held-out loss (checked every `eval_steps`) is at or below this; None trains the "
        "whole budget. The held-out loss falls by an order of magnitude when a scratch model starts copying "
        "slot values, which is what the gate needs (docs/bench-compile.md)."
    )})
    epochs: float = field(default=3.0, metadata={"help": "Epochs when max_steps <= 0."})
    batch_size: int = field(default=8, metadata={"help": "Conversations per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    learning_rate: float | None = field(default=None, metadata={"help": (
        "Peak learning rate (cosine schedule). None: the base's default, 5e-3 for a scratch model and 1e-5 "
        "for full fine-tuning of a pretrained one (compiler.train.hyperparameters)."
    )})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int = field(
        default=2048, metadata={"help": "Tokens per conversation (at most the model's positions); longer are truncated."}
    )
    eval_steps: int = field(default=250, metadata={"help": "Steps between held-out loss checks / checkpoints."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the best is always kept)."})
    logging_steps: int = field(default=50, metadata={"help": "Steps between progress lines."})
    vocab_size: int = field(default=1024, metadata={"help": "Vocabulary of the scratch tokenizer."})
    split_digits: bool = field(default=False, metadata={"help": (
        "Scratch tokenizer: every digit its own token, as most pretrained tokenizers do. A number is then "
        "copied digit by digit through ten well-trained tokens instead of through BPE pieces of digits that "
        "each appear a few times (random order numbers, references)."
    )})
    copy_arguments: bool = field(default=True, metadata={"help": (
        "Tool arguments the training conversations always copy from earlier messages (an order number, an "
        "email; 99% of at least 5 calls) are decoded as copies: the model picks among the tokens that keep "
        "the value a span of the conversation (compiler/copying.py, `copying.json` beside the weights; every "
        "decoder of the model applies it, the gate included). A small model picks the right value but "
        "garbles long random ones token by token; off leaves decoding unconstrained."
    )})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 training; None means on when CUDA is present."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads; None keeps torch's default."})
    resume: bool = field(default=True, metadata={"help": "Resume from the last checkpoint in the output folder."})
    seed: int = field(default=0, metadata={"help": "Training seed."})


@dataclass
class GateConfig:
    min_node_accuracy: float = field(default=0.95, metadata={"help": "Held-out node accuracy to pass."})
    min_success_rate: float = field(default=0.90, metadata={"help": "Held-out full-conversation success to pass."})
    min_tool_accuracy: float = field(default=0.0, metadata={"help": "Held-out exact tool-call rate to pass."})
    min_judge_score: float = field(default=0.0, metadata={"help": "Mean judge score (1-5) to pass when judged."})
    min_replay_accuracy: float = field(default=0.9, metadata={"help": (
        "Compile from traffic: share of held-out captured agent turns where the compiled model's next action "
        "is the frontier's recorded one (tool call: name and arguments exact; text: same node) to pass."
    )})
    min_replay_node_accuracy: float = field(default=0.0, metadata={"help": (
        "Compile from traffic: the replay accuracy every mined node must reach on its own to pass (0: no "
        "per-node bar; the per-node figures are in the report either way)."
    )})
    replay_holdout: float = field(default=0.2, metadata={"help": (
        "Compile from traffic: share of captured conversations (whole conversations) held out from mining "
        "and training, for the mined graph's fitness and the replay gate."
    )})
    max_new_tokens: int = field(default=96, metadata={"help": "Greedy decoding limit per agent turn."})
    max_turns: int = field(default=40, metadata={"help": "Agent turns after which a conversation is cut off."})
    teacher_model: str | None = field(
        default=None, metadata={"help": "litellm model also evaluated on the same paths, for comparison."}
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "litellm model scoring the paper's five criteria 1-5; None skips it."}
    )


@dataclass
class CompileConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short sha256 of the canonical settings, stored beside what they produced."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _coerce(section: str, key: str, value: Any, current: Any, kind: Any) -> Any:
    if value is None:
        return None
    text = str(kind)
    try:
        if isinstance(current, bool) or text.startswith("bool"):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                if low in ("none", "null", "auto"):
                    return None
                raise ValueError(value)
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("none", "null") and "None" in text:
            return None
        if text.startswith("int"):
            return int(value)
        if text.startswith("float"):
            return float(value)
        return value
    except (TypeError, ValueError):
        raise ConfigError(
            f"`{section}.{key}` = `{value}` is not a valid {text}; give a value of that type."
        ) from None


def apply_values(cfg: CompileConfig, values: dict[str, Any], source: str) -> CompileConfig:
    """Merge a nested ``{section: {key: value}}`` dict or dotted ``{"section.key": value}`` dict."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[key] = value
    sections = {f.name: f for f in fields(cfg)}
    for dotted, value in flat.items():
        section, _, key = dotted.partition(".")
        if section not in sections or not key:
            raise ConfigError(
                f"{source}: unknown key `{dotted}`; use one of the sections {sorted(sections)} as `section.key`."
            )
        obj = getattr(cfg, section)
        known = {f.name: f for f in fields(obj)}
        if key not in known:
            raise ConfigError(f"{source}: unknown key `{dotted}`; known keys in `{section}`: {sorted(known)}.")
        setattr(obj, key, _coerce(section, key, value, getattr(obj, key), known[key].type))
    return cfg


def load_compile_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> CompileConfig:
    """Build the config: dataclass defaults, then the YAML file, then command-line overrides."""
    cfg = CompileConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"compile config `{p}` does not exist; pass an existing YAML file or none.")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"compile config `{p}` is not valid YAML ({exc}); fix the syntax.") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"compile config `{p}` must be a mapping of sections; got {type(raw).__name__}.")
        apply_values(cfg, raw, str(p))
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        apply_values(cfg, given, "command line")
        # steps asked for on the command line win over a token budget from the file (`--max-steps 50`)
        if "train.max_steps" in given and "train.max_tokens" not in given:
            cfg.train.max_tokens = 0
    return cfg


def describe(cls: type) -> dict[str, str]:
    """Field help of a stage dataclass, for ``--help`` texts."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}
