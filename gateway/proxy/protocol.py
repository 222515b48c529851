"""The wire: what the gateway reads of a chat completion request, and the SSE it writes back.

    body = parse_body(raw)                         # InvalidRequest naming the field, else the dict
    usage_of(parsed) -> (prompt, completion, cached) | None
    acc = StreamAccumulator(client_wants_usage=False); out = acc.reframe(lines)

The request body is validated only as far as the gateway needs it (`model`, `messages`, `stream`);
every other field passes through to the upstream untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TIERGATE_METADATA_KEYS = frozenset({"workflow", "conversation"})


@dataclass
class ChatResult:
    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200


def sse_from_completion(parsed: Mapping[str, Any], include_usage: bool) -> list[bytes]:
    """A complete answer as OpenAI stream chunks: one delta per choice, then usage if asked, then [DONE]."""
    base = {
        "id": parsed.get("id"),
        "object": "chat.completion.chunk",
        "created": parsed.get("created"),
        "model": parsed.get("model"),
    }
    out = []
    for choice in parsed.get("choices") or ():
        msg = dict(choice.get("message") or {})
        delta: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg["tool_calls"])]
        chunk = {
            **base,
            "choices": [{"index": choice.get("index", 0), "delta": delta, "finish_reason": None}],
        }
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        end = {
            **base,
            "choices": [
                {
                    "index": choice.get("index", 0),
                    "delta": {},
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            ],
        }
        out.append(b"data: " + orjson.dumps(end) + b"\n\n")
    if include_usage and parsed.get("usage"):
        out.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": parsed["usage"]}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


async def replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON ({exc.args[0] if exc.args else exc}); send a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, not {type(body).__name__}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` is required and must be a non-empty string.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "`messages` is required and must be a non-empty array of message objects.", param="messages"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(
                f"`messages[{i}]` must be an object with `role` and `content`.", param=f"messages[{i}]"
            )
        role = m.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"`messages[{i}].role` is `{role}`; use one of {', '.join(sorted(ROLES))}.",
                param=f"messages[{i}].role",
            )
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("`stream` must be a boolean.", param="stream")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("`tools` must be an array of tool objects.", param="tools")
    return body


# orjson parses 1024 levels but writes only 254; a body between the two would fail when the gateway
# re-encodes it for the upstream, after the call was planned. Counting brackets first is C-speed.
_MAX_DEPTH = 254


def check_fields(raw: bytes, body: dict[str, Any]) -> None:
    """The fields the gateway itself reads, checked before any upstream call; InvalidRequest names one.

    Runs after `parse_body`, once the request can be given its ledger record: a request refused here
    is recorded (status 400), since its model and workflow are known.
    """
    if raw.count(b"[") + raw.count(b"{") > _MAX_DEPTH:
        for name, value in body.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                raise InvalidRequest(
                    f"`{name}` is nested more than {_MAX_DEPTH} levels deep; flatten it.", param=name
                ) from None
    if body.get("stream") and body.get("stream_options") is not None:
        if not isinstance(body["stream_options"], dict):
            raise InvalidRequest(
                "`stream_options` must be an object such as {\"include_usage\": true}.", param="stream_options"
            )
    for i, m in enumerate(body["messages"]):
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                if not isinstance(part, dict):
                    raise InvalidRequest(f"`{where}` must be a content part object.", param=where)
                if "text" in part and not isinstance(part["text"], str):
                    raise InvalidRequest(
                        f"`{where}.text` must be a string, not {_json_type(part['text'])}.", param=f"{where}.text"
                    )
        calls = m.get("tool_calls")
        if calls is not None and m.get("role") == "assistant":
            _check_tool_calls(calls, f"messages[{i}].tool_calls")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise InvalidRequest(f"`{where}` must be an array of tool call objects.", param=where)
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or ("function" in call and not isinstance(fn, dict)):
            raise InvalidRequest(
                f"`{where}[{k}]` must be a tool call object: "
                '{"id": ..., "type": "function", "function": {"name": ..., "arguments": "..."}}.',
                param=f"{where}[{k}]",
            )
        for key in ("name", "arguments"):
            if fn is not None and key in fn and not isinstance(fn[key], str):
                raise InvalidRequest(
                    f"`{where}[{k}].function.{key}` must be a string, not {_json_type(fn[key])}.",
                    param=f"{where}[{k}].function.{key}",
                )


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def usage_of(parsed: Mapping[str, Any]) -> tuple[int, int, int] | None:
    usage = parsed.get("usage")
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    try:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), int(cached or 0)
    except (TypeError, ValueError):  # an upstream's garbled usage: counted locally instead
        return None


def reply_message(parsed: Mapping[str, Any]) -> dict[str, Any]:
    choices = parsed.get("choices") or []
    if choices and isinstance(choices[0], dict):
        msg = choices[0].get("message")
        if isinstance(msg, dict):
            return msg
    return {"role": "assistant", "content": ""}


class StreamAccumulator:
    """Follows an SSE stream: usage, the first choice's reply (for stitching), and whether to hide a chunk."""

    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.usage: tuple[int, int, int] | None = None
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.done = False
        self.error: dict[str, Any] | None = None  # an error event the upstream sent mid-stream

    def feed(self, data: bytes) -> bool:
        """Take one `data:` payload; return False when the client must not see it."""
        if data.strip() == b"[DONE]":
            self.done = True
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        if "error" in chunk:
            err = chunk["error"]
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            return True  # the client sees the upstream's own error event
        try:
            return self._follow(chunk)
        except (TypeError, ValueError, AttributeError):  # a malformed chunk: relayed, not accounted
            return True

    def _follow(self, chunk: dict[str, Any]) -> bool:
        usage = usage_of(chunk)
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices") or []
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                self.content.append(delta["content"])
            for tc in delta.get("tool_calls") or ():
                slot = self.tool_calls.setdefault(int(tc.get("index", 0)), {"name": "", "arguments": ""})
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["name"] += str(fn["name"])
                if fn.get("arguments"):
                    slot["arguments"] += str(fn["arguments"])
        if usage is not None and not choices and not self.client_wants_usage:
            return False
        if usage is not None and not self.client_wants_usage:
            # usage riding on a content chunk (some servers do that): keep the chunk, drop the usage
            return True
        return True

    def reframe(self, lines: list[bytes]) -> bytes:
        """Complete SSE lines in, the bytes the client gets out: each event ends in a blank line."""
        out = bytearray()
        for line in lines:
            if line.startswith(b"data:"):
                if self.feed(line[5:].strip()):
                    out += line.rstrip(b"\r") + b"\n\n"
            elif line.strip():
                out += line.rstrip(b"\r") + b"\n"
        return bytes(out)

    def reply(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"type": "function", "function": {"name": v["name"], "arguments": v["arguments"]}}
                for _, v in sorted(self.tool_calls.items())
            ]
        return msg
