"""The one tool-call format of compiled models, from training data to the serving parser.

    text = render_tool_call("search_flights", {"origin": "Oslo"})
    # '<tool_call>{"name": "search_flights", "arguments": {"origin": "Oslo"}}</tool_call>'
    parse_assistant_text(text + "<|end|>")["tool_calls"][0]["function"]["arguments"]   # '{"origin": "Oslo"}'

Hermes style (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, arguments a JSON object) is
what Qwen 2.x/3 templates emit and what vLLM's ``--tool-call-parser hermes`` reads, so the scratch
template uses it too: one format, one parser (here) for the eval gate, the simulator and the built-in
server, and the same name in the artifact's manifest and in the ``vllm serve`` command.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
HERMES = "hermes"
# tool-call format -> vLLM's `--tool-call-parser` name; only formats parsed by `parse_assistant_text`
VLLM_PARSERS = {HERMES: "hermes"}

_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)
_NAME_RE = re.compile(r'"name"\s*:\s*"([^"]*)"')
_ARGS_RE = re.compile(r'"arguments"\s*:\s*(.*?)\s*\}?\s*$', re.S)


class ToolFormatError(ValueError):
    """A base model's template renders tool calls in a format tiergate cannot parse or serve."""


def render_tool_call(name: str, arguments: Any) -> str:
    """A Hermes call as the scratch template renders it (arguments as a JSON object, never a string)."""
    args = json.loads(arguments) if isinstance(arguments, str) and arguments.strip().startswith("{") else arguments
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{CALL_OPEN}{body}{CALL_CLOSE}"


def _call(name: str, arguments: Any) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": name, "arguments": args}}


def parse_call_body(body: str) -> dict[str, Any]:
    """The JSON between the call markers -> an OpenAI tool call; a malformed body keeps its raw text.

    The eval gate then counts a malformed call as wrong instead of crashing, and a client sees what the
    model wrote rather than nothing.
    """
    body = body.strip()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        args = data.get("arguments", data.get("parameters", {}))
        if isinstance(args, str):  # a model trained on string-of-string arguments: unwrap once
            try:
                args = json.loads(args)
            except ValueError:
                pass
        return _call(data["name"], args)
    name = _NAME_RE.search(body)
    raw = _ARGS_RE.search(body)
    return _call(name.group(1) if name else "", raw.group(1) if raw else body)


def parse_assistant_text(text: str, end_tokens: Iterable[str] = (), strip_tokens: Iterable[str] = ()) -> dict[str, Any]:
    """Decoded model output -> an OpenAI assistant message (``content`` and ``tool_calls``).

    The text ends at the first of ``end_tokens`` (the template's end of turn); ``strip_tokens`` (the
    tokenizer's other special tokens) are removed from the content, as vLLM's default decoding does.
    """
    for end in (t for t in end_tokens if t):
        text = text.split(end, 1)[0]
    calls = [parse_call_body(m.group(1)) for m in _CALL_RE.finditer(text)]
    content = _CALL_RE.sub("", text)
    if CALL_OPEN in content:  # an unterminated call (length limit): parse what there is
        content, _, tail = content.partition(CALL_OPEN)
        calls.append(parse_call_body(tail))
    for tok in strip_tokens:
        if tok and tok not in (CALL_OPEN, CALL_CLOSE):
            content = content.replace(tok, "")
    content = content.strip()
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    return message


def call_arguments(message: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """A message's tool calls as (name, arguments), the arguments read from their JSON text (the text
    itself when it is not JSON)."""
    out = []
    for c in message.get("tool_calls") or []:
        f = c.get("function") or c
        args = f.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        out.append((f.get("name"), args))
    return out


def calls_match(got: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Same names and arguments (as data: key order and spacing do not matter)."""
    return call_arguments(got) == call_arguments(expected)


def tool_format_of(chat_template: str | None) -> str | None:
    """The tool-call format a chat template renders, or None when it renders no tool calls we know."""
    if chat_template and CALL_OPEN in chat_template and CALL_CLOSE in chat_template:
        return HERMES
    return None


def vllm_parser(tool_format: str) -> str:
    """vLLM's ``--tool-call-parser`` for a format tiergate parses."""
    try:
        return VLLM_PARSERS[tool_format]
    except KeyError:
        raise ToolFormatError(
            f"tool-call format `{tool_format}` has no parser here; compiled models use {sorted(VLLM_PARSERS)}."
        ) from None


_SAMPLE = {"string": "Zürich \"old town\"", "integer": 2, "number": 2.5, "boolean": True, "array": ["a", 1],
           "object": {"k": "v"}}


def _probe_call(tools: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """A call to the workflow's first tool with a value of each parameter's type (quotes and non-ASCII
    included, where escaping goes wrong), or to a probe tool when the workflow has none."""
    for t in tools:
        f = t.get("function", t)
        props = (f.get("parameters") or {}).get("properties") or {}
        return str(f.get("name", "probe")), {k: _SAMPLE.get(str(v.get("type", "string")), "x")
                                             for k, v in props.items()}
    return "probe", {"city": _SAMPLE["string"], "days": 2}


def roundtrip_check(tokenizer: Any, tools: Sequence[Mapping[str, Any]] = (), tool_format: str = HERMES) -> str:
    """Render a tool call with ``tokenizer``'s chat template, decode it as a server would, parse it with the
    serving parser and compare; returns vLLM's ``--tool-call-parser`` name, raises ``ToolFormatError``.

    Run at artifact write time and before a canary: a model whose calls the server cannot read would
    score as a wrong answer on every tool turn of live traffic.
    """
    from .templates import TemplateError, assistant_spans, end_of_turn

    parser = vllm_parser(tool_format)
    vocab = tokenizer.get_vocab()
    missing = [t for t in (CALL_OPEN, CALL_CLOSE) if t not in vocab]
    if missing:  # vLLM's hermes parser locates calls by these token ids
        raise ToolFormatError(
            f"{', '.join(f'`{t}`' for t in missing)} is not a single token of the vocabulary; vLLM's `{parser}` "
            "parser needs both as tokens: add them to the tokenizer (`add_tokens`) before training."
        )
    name, args = _probe_call(tools)
    call = {"id": "call_probe", "type": "function", "function": {"name": name, "arguments": args}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "probe"},
                                      {"role": "assistant", "content": None, "tool_calls": [call]}]
    try:
        eot = end_of_turn(tokenizer)
        text, spans = assistant_spans(tokenizer, messages, list(tools), eot)
    except (TemplateError, ValueError, TypeError) as exc:
        raise ToolFormatError(f"the chat template cannot render a tool call: {exc}") from None
    a, b = spans[0]
    ids = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    got = parse_assistant_text(decoded, [eot])
    if not calls_match(got, {"tool_calls": [call]}):
        raise ToolFormatError(
            f"tool-call round trip failed: the template renders `{text[a:b][:200]}`, the `{parser}` parser reads "
            f"{json.dumps(got.get('tool_calls'), ensure_ascii=False)[:200]}; the template and the parser disagree."
        )
    return parser
