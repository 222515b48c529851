"""A fixed-answer OpenAI-compatible upstream on loopback: the floor every gateway is measured against.

    python bench/overhead/upstream.py --port 18300

Why hand-rolled: it must cost as little as possible so that what the benchmark sees on top of it is
the gateway's own work. A uvloop `asyncio.Protocol` with the httptools parser skips the ASGI layer
entirely and answers from byte strings built once per (model, mode). It serves

- `POST /v1/chat/completions`, non-stream (a `chat.completion` with `usage`) and stream (SSE chunks,
  then a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`),
- `GET /v1/models`,
- `GET /stats`, the number of chat completions it answered, so the harness can check that a gateway
  really forwarded every request instead of answering from somewhere else.

It is a benchmark fixture, not a test double: no error injection, no delays.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import cast

import httptools
import orjson

ANSWER_WORDS: tuple[str, ...] = ("I", " have", " booked", " the", " 09:40", " train", " for", " you", ".")
"""The fixed answer, one stream chunk per word."""

PROMPT_TOKENS = 612
COMPLETION_TOKENS = len(ANSWER_WORDS)
CREATED = 1_763_700_000


def completion_body(model: str) -> bytes:
    """The non-stream answer; built once per model name and cached by the caller."""
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(ANSWER_WORDS), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
        }
    )


def stream_events(model: str, include_usage: bool) -> list[bytes]:
    """All SSE events of one streamed answer, in the order and shape OpenAI sends them."""

    def chunk(delta: dict[str, object], finish: str | None, usage: dict[str, object] | None) -> bytes:
        body: dict[str, object] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
            "choices": []
            if usage
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""}, None, None)]
    events += [chunk({"content": word}, None, None) for word in ANSWER_WORDS]
    events.append(chunk({}, "stop", None))
    if include_usage:
        events.append(
            chunk(
                {},
                None,
                {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events


def connection_header(keep_alive: bool) -> bytes:
    return b"\r\nconnection: keep-alive\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n"


def sse_response(events: list[bytes], keep_alive: bool) -> bytes:
    """A streamed answer framed as OpenAI frames it: chunked transfer encoding, one HTTP chunk per event.

    All chunks go out in one write (the floor must be fast), but the framing is the real one, so a
    gateway gets no shortcut from a Content-Length it would not see in production.
    """
    chunks = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked"
    return head + connection_header(keep_alive) + b"".join(chunks) + b"0\r\n\r\n"


def http_response(status: bytes, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: ",
            content_type,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            connection_header(keep_alive),
            body,
        )
    )


class Responses:
    """Byte strings for every answer, keyed by what changes them; the hot path only looks them up."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, bool, bool, bool], bytes] = {}
        self.chat_requests = 0

    def chat(self, raw: bytes, keep_alive: bool) -> bytes:
        try:
            request = orjson.loads(raw)
            model = str(request["model"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            body = orjson.dumps(
                {
                    "error": {
                        "message": "the body is not a chat completion request",
                        "type": "invalid_request_error",
                    }
                }
            )
            return http_response(b"400 Bad Request", b"application/json", body, keep_alive)
        self.chat_requests += 1
        stream = request.get("stream") is True
        options = request.get("stream_options") or {}
        include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
        key = (model, stream, include_usage, keep_alive)
        found = self.cache.get(key)
        if found is None:
            if stream:
                found = sse_response(stream_events(model, include_usage), keep_alive)
            else:
                found = http_response(b"200 OK", b"application/json", completion_body(model), keep_alive)
            self.cache[key] = found
        return found

    def models(self, keep_alive: bool) -> bytes:
        body = orjson.dumps(
            {
                "object": "list",
                "data": [{"id": "bench-model", "object": "model", "created": CREATED, "owned_by": "bench"}],
            }
        )
        return http_response(b"200 OK", b"application/json", body, keep_alive)

    def stats(self, keep_alive: bool) -> bytes:
        body = orjson.dumps({"chat_requests": self.chat_requests})
        return http_response(b"200 OK", b"application/json", body, keep_alive)


NOT_FOUND = b'{"error":{"message":"no such route","type":"invalid_request_error"}}'


class UpstreamProtocol(asyncio.Protocol):
    """One connection; httptools calls back as it parses, keep-alive and pipelining included."""

    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast instead of a check
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(http_response(b"400 Bad Request", b"text/plain", b"bad request", False))
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if method == b"POST" and path in (b"/v1/chat/completions", b"/chat/completions"):
            out = self.responses.chat(b"".join(self.body), keep_alive)
        elif method == b"GET" and path in (b"/v1/models", b"/models"):
            out = self.responses.models(keep_alive)
        elif method == b"GET" and path == b"/stats":
            out = self.responses.stats(keep_alive)
        else:
            out = http_response(b"404 Not Found", b"application/json", NOT_FOUND, keep_alive)
        assert self.transport is not None
        self.transport.write(out)
        if not keep_alive:
            self.transport.close()


async def serve(host: str, port: int, ready: Callable[[], None] | None = None) -> None:
    """Serve until cancelled."""
    responses = Responses()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(responses), host, port, backlog=1024)
    if ready is not None:
        ready()
    async with server:
        await server.serve_forever()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="fixed-answer OpenAI-compatible upstream for bench/overhead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18300)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, only slower; the floor is then a little higher
        runner: Callable[..., None] = asyncio.run
    else:
        runner = uvloop.run
    started = time.monotonic()
    try:
        runner(
            serve(
                args.host,
                args.port,
                lambda: print(
                    f"upstream: listening on http://{args.host}:{args.port} ({time.monotonic() - started:.2f} s)",
                    flush=True,
                ),
            )
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
