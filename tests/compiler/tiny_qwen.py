"""A stand-in for a real instruct base (Qwen2.5-3B-Instruct) that builds offline in a second.

    folder = build_tiny_qwen(tmp_path / "qwen", texts)

The folder is what `AutoModelForCausalLM.from_pretrained` reads from the hub: a random-weight Qwen2
(the real architecture, tiny), a byte-level BPE tokenizer trained here on ``texts`` with Qwen's special
tokens (``<|im_start|>``, ``<|im_end|>`` special; ``<tool_call>``, ``</tool_call>`` plain added tokens,
as in Qwen's vocabulary), and Qwen 2.5's chat template: Hermes tool calls, ``tool_call.arguments |
tojson`` and no ``{% generation %}`` markers, so TRL's assistant-only loss refuses it and tiergate has
to compute the assistant mask itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# Qwen2.5-Instruct's template, as published (only the default system line shortened)
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
ADDED = ("<tool_call>", "</tool_call>")
TEMPLATE_TEXT = (
    "system user assistant tool You are a helpful assistant. # Tools You may call one or more functions to "
    "assist with the user query. <tools></tools> <tool_response>\n</tool_response> {\"name\": \"arguments\": "
    '{"type": "function", "function": {"name": "description": "parameters": {"type": "object", "properties": '
)


def train_qwen_tokenizer(texts: Iterable[str], vocab_size: int = 600, template: str | None = QWEN25_TEMPLATE) -> object:
    """Byte-level BPE with Qwen's special tokens, its eos `<|im_end|>` (as in the instruct models)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEMPLATE_TEXT, *texts], trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if template is not None:
        wrapped.chat_template = template
    return wrapped


def build_tiny_qwen(folder: Path, texts: Iterable[str], template: str | None = QWEN25_TEMPLATE,
                    hidden: int = 64, layers: int = 2) -> Path:
    """Write a random-weight Qwen2 + tokenizer + template into ``folder`` (a local 'hub' model)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = train_qwen_tokenizer(texts, template=template)
    config = Qwen2Config(
        vocab_size=len(tok),  # type: ignore[arg-type]
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),  # type: ignore[attr-defined]
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),  # type: ignore[attr-defined]
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    # what Qwen instruct models ship: sampling defaults that a served compiled model must not inherit
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.7
    model.generation_config.repetition_penalty = 1.05
    model.save_pretrained(folder)
    tok.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder
