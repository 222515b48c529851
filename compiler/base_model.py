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


def _source(spec: str) -> str:
    return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec


def load_tokenizer(spec: str, conversations: Iterable[Mapping[str, Any]] = (), vocab_size: int = 1024,
                   split_digits: bool = False) -> Any:
    """The tokenizer a compile trains with, its chat template resolved (the base's own, or built from its
    own special tokens, or a refusal naming what to add); scratch tokenizers are trained on ``conversations``.
    """
    if is_scratch(spec):
        from .scratch import train_tokenizer

        return train_tokenizer(conversations, vocab_size=vocab_size, split_digits=split_digits)
    from transformers import AutoTokenizer

    from .templates import resolve_chat_template

    try:
        tokenizer = AutoTokenizer.from_pretrained(_source(spec))
    except OSError as exc:
        raise BaseModelError(
            f"cannot load the tokenizer of base model `{spec}` ({exc}); give a local folder or a hub id reachable "
            "from here."
        ) from None
    tokenizer.chat_template = resolve_chat_template(tokenizer, spec)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_base_template(spec: str, calls_tools: bool) -> str:
    """Refuse, before any data is rendered (or a teacher paid), a base whose template cannot train:
    no template to build, no end-of-turn token, or no Hermes tool calls for a workflow that calls tools.
    Returns the end-of-turn token."""
    if is_scratch(spec):
        return "<|end|>"
    from .templates import end_of_turn
    from .toolcalls import tool_format_of

    tokenizer = load_tokenizer(spec)
    eot = end_of_turn(tokenizer)
    if calls_tools and tool_format_of(tokenizer.chat_template) is None:
        raise BaseModelError(
            f"the chat template of `{spec}` renders no Hermes `<tool_call>` blocks, and the workflow calls tools; "
            'give the base a template that renders `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` '
            "(as Qwen's do)."
        )
    return eot


def load_model(spec: str, tokenizer: Any, seed: int = 0, dtype: Any = None) -> Any:
    """The model to fine-tune, created after the training config so ZeRO-3 / FSDP low-memory init applies.

    ``dtype`` None keeps float32 (mixed precision then trains with fp32 master weights).
    """
    if is_scratch(spec):
        from .scratch import build_model

        return build_model(spec, tokenizer, seed=seed)
    from transformers import AutoModelForCausalLM

    try:
        model: Any = AutoModelForCausalLM.from_pretrained(_source(spec), dtype=dtype or "float32")
    except OSError as exc:
        raise BaseModelError(
            f"cannot load base model `{spec}` ({exc}); give a local folder or a hub id reachable from here."
        ) from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


def load_base(
    spec: str,
    conversations: Iterable[Mapping[str, Any]] = (),
    vocab_size: int = 1024,
    lora: bool = False,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Model and tokenizer to fine-tune, in one call (training itself loads them apart, see ``load_model``)."""
    check_base_model(spec, lora=lora)
    tokenizer = load_tokenizer(spec, conversations, vocab_size)
    return load_model(spec, tokenizer, seed=seed), tokenizer


def accelerator() -> tuple[str, Any]:
    """Where the gate and the built-in server run: the GPU in bf16 when there is one, else the CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def load_trained(folder: str | Path) -> tuple[Any, Any]:
    """A compiled model (or checkpoint) folder -> (model in eval mode, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise BaseModelError(f"`{path}` is not a model folder (no config.json); pass a compiled artifact folder.")
    device, dtype = accelerator()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model = model.to(device)
    model.eval()
    return model, tokenizer
