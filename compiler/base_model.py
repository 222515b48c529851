"""Where the weights a compile starts from come from: a scratch spec, a local folder or a hub id.

    model, tokenizer = load_base("scratch:tiny", conversations=train_rows)
    model, tokenizer = load_base("/models/qwen2.5-0.5b-instruct")

Compile is full-parameter on purpose: the procedure has to move into the weights, and the paper's
result is that adapters do not hold it (``lora=True`` is refused with that reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

LORA_REFUSAL = (
    "LoRA is refused for compile: procedural knowledge is not low-rank; "
    "drop `--lora` to run a full-parameter fine-tune."
)


class BaseModelError(ValueError):
    """The base model cannot be used; the message says which and how to fix it."""


def is_scratch(spec: str) -> bool:
    return spec.startswith("scratch:")


def check_base_model(spec: str, lora: bool = False) -> None:
    """Refuse what compile cannot use, before any heavy import."""
    if lora:
        raise BaseModelError(LORA_REFUSAL)
    if not spec:
        raise BaseModelError("empty base model; pass `scratch:<size>`, a local folder or a hub id.")
    if is_scratch(spec):
        from .scratch import parse_spec

        parse_spec(spec)
        return
    path = Path(spec)
    looks_local = spec.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path.expanduser() / "config.json").is_file():
        raise BaseModelError(
            f"base model folder `{spec}` has no config.json; point at a Hugging Face model folder."
        )


def load_base(
    spec: str,
    conversations: Iterable[Mapping[str, Any]] = (),
    vocab_size: int = 1024,
    lora: bool = False,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Model and tokenizer to fine-tune; scratch tokenizers are trained on ``conversations``."""
    check_base_model(spec, lora=lora)
    if is_scratch(spec):
        from .scratch import build_model, train_tokenizer

        tokenizer = train_tokenizer(conversations, vocab_size=vocab_size)
        return build_model(spec, tokenizer, seed=seed), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except OSError as exc:
        raise BaseModelError(
            f"cannot load base model `{spec}` ({exc}); give a local folder or a hub id reachable from here."
        ) from None
    if tokenizer.chat_template is None:
        from .templates import SCRATCH_TEMPLATE

        tokenizer.chat_template = SCRATCH_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_trained(folder: str | Path) -> tuple[Any, Any]:
    """A compiled model (or checkpoint) folder -> (model in eval mode, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise BaseModelError(f"`{path}` is not a model folder (no config.json); pass a compiled artifact folder.")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    model.eval()
    return model, tokenizer
