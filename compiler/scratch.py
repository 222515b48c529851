"""Scratch base models: a small Llama-style model plus a tokenizer trained on the conversations at hand.

``scratch:<size>`` lets the whole compile pipeline run offline (no hub, no weights to download) and
keeps CPU training fast: a byte-level BPE vocabulary of ~1k tokens learnt from the workflow's own
conversations makes sequences short, and slot values copy in few tokens::

    tok = train_tokenizer(conversations, vocab_size=1024)
    model = build_model("tiny", tok)

The chat template (``compiler.templates.SCRATCH_TEMPLATE``) renders tools compactly (``name(arg, ...)``)
and tool calls in the Hermes format of ``compiler.toolcalls``, whose parser reads them back; training
computes the assistant mask from the rendering, end-of-turn token included, so the model learns to stop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .templates import SCRATCH_TEMPLATE as CHAT_TEMPLATE
from .toolcalls import CALL_CLOSE, CALL_OPEN, render_tool_call

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|tools|>")
SPECIAL_TOKENS = (PAD, BOS, END, *ROLE_TOKENS, CALL_OPEN, CALL_CLOSE)
EMBED_STD = 0.1  # initial token embedding scale of scratch models (see build_model)
# value-like words (a capital letter or a digit first) | everything between them; see train_tokenizer
VALUE_SPLIT = r"[\p{Lu}\p{N}][\p{L}\p{N}_]*|[^\p{Lu}\p{N}]+"


@dataclass(frozen=True)
class ScratchSize:
    """Shape of a scratch Llama; sizes are picked for CPU (tiny/small) or one GPU (100m, 300m)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int = 2048


SIZES: dict[str, ScratchSize] = {
    "micro": ScratchSize(hidden=64, layers=2, heads=4, intermediate=192, max_positions=1024),
    "tiny": ScratchSize(hidden=128, layers=4, heads=4, intermediate=384, max_positions=2048),
    "small": ScratchSize(hidden=384, layers=6, heads=6, intermediate=1024),
    "100m": ScratchSize(hidden=768, layers=12, heads=12, intermediate=2304, max_positions=4096),
    "300m": ScratchSize(hidden=1024, layers=20, heads=16, intermediate=2816, max_positions=4096),
}


class ScratchError(ValueError):
    """A `scratch:<size>` spec is wrong."""


def parse_spec(spec: str) -> ScratchSize:
    """``scratch:tiny`` -> its size; unknown sizes name the known ones."""
    name = spec.split(":", 1)[1] if spec.startswith("scratch:") else spec
    if name not in SIZES:
        raise ScratchError(f"unknown scratch size `{name}`; use one of {', '.join('scratch:' + s for s in SIZES)}.")
    return SIZES[name]


def _tool_line(tools: Iterable[Mapping[str, Any]]) -> str:
    parts = []
    for t in tools:
        f = t.get("function", t)
        props = (f.get("parameters") or {}).get("properties") or {}
        parts.append(f"{f.get('name', '')}({', '.join(props)})")
    return "; ".join(parts)


def conversation_texts(conv: Mapping[str, Any]) -> Iterator[str]:
    """The strings a conversation renders to, for tokenizer training (same pieces the template emits)."""
    tools = conv.get("tools") or []
    if isinstance(tools, str):
        tools = json.loads(tools)
    if tools:
        yield _tool_line(tools)
    for m in conv.get("messages", []):
        if m.get("content"):
            yield str(m["content"])
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            args = fn.get("arguments", "")
            yield render_tool_call(fn.get("name", ""), args)


def train_tokenizer(conversations: Iterable[Mapping[str, Any]], vocab_size: int = 1024, split_digits: bool = False) -> Any:
    """Byte-level BPE learnt on the conversations, wrapped as a transformers fast tokenizer with our template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for conv in conversations for t in conversation_texts(conv)]
    if not texts:
        raise ScratchError("no conversations to train the scratch tokenizer on; render the flowchart first.")
    tok = Tokenizer(models.BPE())
    # Pre-tokens are value-like words (a capital or a digit first: `Prague`, `14`, `SK214`, `BK4Q7Z`) and
    # the runs between them (`" to "`, `'", "destination": "'`, a whole lower-case template phrase):
    # - a slot value is the same token in the user's sentence and in the JSON arguments, and the token
    #   right before it is the word that says which slot it is (`" to "` + `Rome`), never a lone space:
    #   copying it is a one-step lookup. With words and spaces split apart, 28% of all tokens were lone
    #   spaces and every value sat two tokens after its cue;
    # - template phrases merge into few tokens, so a conversation is ~2.5x shorter (travel-booking:
    #   600 -> 244 tokens), which is that much less CPU per step.
    # Lower-case values ("paris") merge with their neighbours; charts spell values as names or codes.
    # ``split_digits``: each digit a pre-token of its own, so numbers are digit sequences over ten tokens
    # every conversation trains, not BPE pieces (`A3`, `97`, `93`) seen a few times each
    steps: list[Any] = [pre_tokenizers.Split(Regex(VALUE_SPLIT), behavior="isolated")]
    if split_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_model(spec: str, tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised LlamaForCausalLM sized by ``spec`` for ``tokenizer``'s vocabulary.

    Attention starts mimetic (``mimetic_init``): what a compile most needs from a model this small is to
    copy slot values, and that is what a mimetic start makes quick to learn.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    size = parse_spec(spec)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.heads,
        max_position_embeddings=size.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # tied, so this is the output side too. Values a model can only guess among (six flight numbers
        # before it copies them) get the same gradient and drift to one shared direction; from the usual
        # 0.02 that shared part soon dwarfs what tells them apart (cosine 0.93 between the flight numbers
        # after 600 steps) and no copy of them can be learnt. From 0.1 they stay apart, and the copies of
        # every slot form in about half the steps (docs/bench-compile.md).
        embeddings: Any = model.get_input_embeddings()
        embeddings.weight.normal_(0.0, EMBED_STD)
    mimetic_init(model)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def mimetic_init(model: Any) -> None:
    """Start every attention layer with ``W_q = W_k`` and ``W_o = W_v^T`` (Trockman & Kolter, 2023,
    "Mimetic Initialization of Self-Attention Layers"), keeping the default random scale.

    Why: a compiled model must copy slot values (the destination the user named into ``search_flights``,
    the flight number from a tool result into ``book_flight``). Copying needs a head that attends to the
    value and an output map that writes the attended token back; from a plain random start each half
    gets a gradient only once the other half works, so the copy forms after a long plateau at a
    seed-dependent step (travel-booking: 1 seed in 6 within 1,000 steps). With ``W_q W_k^T`` and
    ``W_o W_v`` positive semi-definite, heads already lean to similar tokens and write back what they
    read, and the copy forms within a few hundred steps (docs/bench-compile.md).

        model = LlamaForCausalLM(config); mimetic_init(model)
    """
    import torch

    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            if attn.q_proj.weight.shape == attn.k_proj.weight.shape:  # not with grouped key/value heads
                attn.q_proj.weight.copy_(attn.k_proj.weight)
            if attn.o_proj.weight.shape == attn.v_proj.weight.t().shape:
                attn.o_proj.weight.copy_(attn.v_proj.weight.t())


def count_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))
