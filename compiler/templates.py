"""Chat templates of compiled models: which template a base trains with, and the assistant-token mask
computed from any template (no ``{% generation %}`` markers needed).

    template = resolve_chat_template(tokenizer, "/models/qwen")   # the base's own, or one built for it
    ids, mask = tokenize_conversation(tokenizer, messages, tools)  # mask: 1 on assistant turns + end token

The mask is found by rendering the conversation up to each assistant message (with the generation
prompt) and taking the difference with the whole rendering: what follows, up to the turn's end token,
is the assistant's. Text after the end-of-turn token (Qwen's ``\\n``) is left out, so the model learns to
emit the end token and stop there, the token the servers stop on. ``check_mask`` refuses a mask that
is all zero or all one: either would train a model that does not know where its turn is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

# Hermes tool calls (see compiler.toolcalls), arguments rendered as a JSON object; tools listed compactly
# (``name(arg, ...)``) since a scratch model learns the procedure, not the schema. No `{% generation %}`
# markers: the assistant mask is computed from the rendering itself (``assistant_spans``).
SCRATCH_TEMPLATE = (
    "{%- for m in messages %}"
    "{%- if m.role == 'system' %}<|system|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'user' %}<|user|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'tool' %}<|tool|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'assistant' %}<|assistant|>{{ m.content or '' }}"
    "{%- for c in (m.tool_calls or []) %}{%- set f = c.function if c.function is defined else c %}"
    '<tool_call>{"name": {{ f.name | tojson }}, "arguments": '
    "{{ f.arguments if f.arguments is string else (f.arguments | tojson) }}}</tool_call>"
    "{%- endfor %}<|end|>"
    "{%- endif %}"
    "{%- if loop.first and tools %}<|tools|>"
    "{%- for t in tools %}{%- set f = t.function if t.function is defined else t %}{{ f.name }}("
    "{%- if f.parameters is defined and f.parameters.properties is defined %}"
    "{{ f.parameters.properties.keys() | list | join(', ') }}{%- endif %})"
    "{%- if not loop.last %}; {% endif %}{%- endfor %}<|end|>"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
# For a base without a template whose vocabulary has ChatML tokens (Qwen base models): Qwen 2.5's layout,
# tools as JSON in the system turn and Hermes tool calls, so vLLM's `hermes` parser reads what it emits.
CHATML_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' %}{%- set system = messages[0].content %}"
    "{%- set rest = messages[1:] %}{%- else %}{%- set system = '' %}{%- set rest = messages %}{%- endif %}"
    "{%- if system or tools %}{{ '<|im_start|>system\\n' + system }}"
    "{%- if tools %}{{ '\\n\\n# Tools\\n\\nYou may call one or more functions. Function signatures:\\n<tools>' }}"
    "{%- for t in tools %}{{ '\\n' }}{{ t | tojson }}{%- endfor %}"
    "{{ '\\n</tools>\\n\\nFor each call return <tool_call>\\n"
    '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call>\' }}'
    "{%- endif %}{{ '<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in rest %}"
    "{%- if m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' + (m.content or '') }}"
    "{%- for c in (m.tool_calls or []) %}{%- set f = c.function if c.function is defined else c %}"
    "{%- if m.content or not loop.first %}{{ '\\n' }}{%- endif %}"
    "{{ '<tool_call>\\n{\"name\": ' }}{{ f.name | tojson }}{{ ', \"arguments\": ' }}"
    "{{ f.arguments if f.arguments is string else (f.arguments | tojson) }}{{ '}\\n</tool_call>' }}"
    "{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)


class TemplateError(ValueError):
    """The base model's chat template cannot train a compiled model; the message says what to add or fix."""


def resolve_chat_template(tokenizer: Any, source: str) -> str:
    """The template to train with: the base's own; else ChatML built from its own ChatML tokens; else refuse.

    A template whose markers are not tokens of the vocabulary, or whose turn end is not the model's own
    end token, trains a model that never stops, so there is no generic fallback.
    """
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the default one is the chat template
        own = own.get("default")
    if own:
        return str(own)
    vocab = tokenizer.get_vocab()
    if all(t in vocab for t in CHATML_TOKENS):
        return CHATML_TEMPLATE
    raise TemplateError(
        f"base model `{source}` has no chat template and no ChatML tokens ({', '.join(CHATML_TOKENS)}); "
        "add a `chat_template` (with Hermes `<tool_call>` tool calls) to its tokenizer_config.json, "
        "or use its instruct variant."
    )


def chat_messages(row: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A stored conversation -> (messages, tools) as templates expect them.

    Tool-call arguments become JSON objects (the OpenAI wire format and our JSONL hold strings), so a
    template applying ``tojson`` renders an object, not a string of a string; content parts become text.
    """
    messages = []
    for m in row.get("messages") or []:
        msg: dict[str, Any] = {"role": m["role"]}
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        msg["content"] = content if content is not None or m["role"] == "assistant" else ""
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function", c)
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        pass  # not JSON: the template shows what was logged
                calls.append({"id": str(c.get("id", "")), "type": "function",
                              "function": {"name": fn.get("name", ""), "arguments": args}})
            msg["tool_calls"] = calls
        if m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        messages.append(msg)
    tools = row.get("tools") or []
    if isinstance(tools, str):
        tools = json.loads(tools)
    return messages, list(tools)


def render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
           generation_prompt: bool = False) -> str:
    return str(tokenizer.apply_chat_template(list(messages), tools=list(tools) or None, tokenize=False,
                                             add_generation_prompt=generation_prompt))


def end_of_turn(tokenizer: Any) -> str:
    """The token that ends an assistant turn in this template: what training teaches and serving stops on."""
    probe = [{"role": "user", "content": "ping"}]
    before = render(tokenizer, probe, [], generation_prompt=True)
    after = render(tokenizer, [*probe, {"role": "assistant", "content": "pong"}], [])
    turn = after[len(before):].rstrip() if after.startswith(before) else ""
    added = {str(getattr(t, "content", t)) for t in tokenizer.added_tokens_decoder.values()}
    ends = sorted((t for t in added if t and turn.endswith(t)), key=len, reverse=True)
    if not ends:
        raise TemplateError(
            f"the chat template ends an assistant turn with `{turn[-20:]}`, which is not a special token of the "
            "vocabulary, so generation would never stop; end assistant turns with the tokenizer's eos token."
        )
    return ends[0]


def assistant_spans(tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                    eot: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, per assistant message, its character span (end token included)."""
    eot = eot or end_of_turn(tokenizer)
    full = render(tokenizer, messages, tools)
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        before = render(tokenizer, messages[:i], tools, generation_prompt=True)
        if not full.startswith(before):
            raise TemplateError(
                f"the chat template does not render message {i} as an extension of the turns before it "
                "(it rewrites earlier turns), so the assistant mask cannot be computed; use a template that "
                "renders history unchanged, or add `{% generation %}` markers and train with TRL directly."
            )
        # the turn runs to its first end-of-turn token (contents hold no special tokens); one render per
        # assistant message instead of two keeps this at ~12 ms for a 10-turn conversation
        end = full.find(eot, len(before))
        spans.append((len(before), end + len(eot) if end >= 0 else len(full)))
    return full, spans


def tokenize_conversation(tokenizer: Any, messages: Sequence[Mapping[str, Any]],
                          tools: Sequence[Mapping[str, Any]], eot: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and the assistant mask (1 = trained on)."""
    text, spans = assistant_spans(tokenizer, messages, tools, eot)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mask = []
    for s, e in enc["offset_mapping"]:
        mask.append(int(any(s < b and e > a for a, b in spans)))
    return ids, mask


def check_mask(ids: Sequence[int], mask: Sequence[int], eot_id: int, where: str) -> None:
    """Refuse a mask that trains on nothing, on everything, or never on the end-of-turn token."""
    if not any(mask):
        raise TemplateError(f"{where}: the assistant mask is all zero (no assistant turn found); nothing to train.")
    if all(mask):
        raise TemplateError(
            f"{where}: the assistant mask is all one: the template does not tell the assistant's turns from the "
            "prompt, so assistant-only loss is impossible; fix the chat template."
        )
    if not any(m and t == eot_id for t, m in zip(ids, mask, strict=True)):
        raise TemplateError(
            f"{where}: the assistant mask leaves out the end-of-turn token, so the model would not learn to stop."
        )
